"""Tests of the diffusion prior (dalle_mini_core.prior): layout, causality, dropout, sampling (measures: test_evaluation_prior.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dalle_mini_core.evaluation.prior import cosine_to_true
from dalle_mini_core.prior import (
    CausalSelfAttention,
    DiffusionPrior,
    PriorTransformer,
    causal_mask,
    load_prior,
    rerank,
    save_prior,
)
from dalle_mini_core.diffusion import scale_embedding, unscale_embedding
from dalle_mini_core.sampling import guided

from tiny_models import PRIOR_D as D, PRIOR_L as L, PRIOR_V as V, tiny_prior_config as tiny_config, unit_vectors as unit


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py




def inputs(B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(B, D, generator=g)
    t = torch.randint(0, 50, (B,), generator=g)
    text = scale_embedding(unit(B, D, seed=seed + 1))
    tokens = torch.randint(0, V, (B, L), generator=g)
    return x_t, t, text, tokens


# --- layout and causality ----------------------------------------------------------------------


def test_sequence_layout_order_and_length():
    torch.manual_seed(0)
    cfg = tiny_config()
    net = PriorTransformer(cfg).eval()
    names = PriorTransformer.sequence_names(cfg)
    assert len(names) == cfg.sequence_length == L + 4
    assert names[L:] == ["text_emb", "time", "x_t", "query"]
    x_t, t, text, tokens = inputs()
    base = net.embed_sequence(x_t, t, text_emb=text, tokens=tokens)
    assert base.shape == (3, L + 4, cfg.width)

    def changed(**kw) -> list[int]:
        args = dict(x_t=x_t, t=t, text_emb=text, tokens=tokens)
        args.update(kw)
        h = net.embed_sequence(args.pop("x_t"), args.pop("t"), **args)
        diff = (h - base).abs().amax(dim=(0, 2))  # (L + 4,)
        return [i for i in range(L + 4) if diff[i] > 1e-6]

    new_tokens = tokens.clone()
    new_tokens[:, 2] = (tokens[:, 2] + 1) % V
    assert changed(tokens=new_tokens) == [2]
    assert changed(text_emb=text + 1.0) == [L]
    assert changed(t=(t + 7) % 50) == [L + 1]
    assert changed(x_t=x_t + 1.0) == [L + 2]
    # the query (last position) is the same learned vector whatever the inputs
    assert torch.allclose(base[0, -1], base[1, -1])


def test_causal_mask_and_attention_match_reference():
    m = causal_mask(4)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 2).eval()
    h = torch.randn(2, 6, 16)
    # reference: explicit masked softmax attention
    q, k, v = attn.qkv(h).view(2, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~causal_mask(6), float("-inf"))
    ref = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 6, 16))
    assert torch.allclose(attn(h), ref, atol=1e-5)


def test_nothing_attends_to_the_future_and_query_sees_everything():
    torch.manual_seed(0)
    cfg = tiny_config()
    net = PriorTransformer(cfg).eval()
    x_t, t, text, tokens = inputs()
    h = net.embed_sequence(x_t, t, text_emb=text, tokens=tokens)

    def run(h):
        for block in net.blocks:
            h = block(h)
        return h

    out = run(h)
    bump = torch.randn(h.shape[-1], generator=torch.Generator().manual_seed(1))  # not constant: LayerNorm would remove a shift
    for j in range(L + 4):
        h2 = h.clone()
        h2[:, j] += bump
        out2 = run(h2)
        diff = (out2 - out).abs().amax(dim=(0, 2))  # (L + 4,)
        assert (diff[:j] < 1e-6).all(), f"perturbing position {j} changed an earlier position"
        assert diff[j] > 1e-4 and diff[-1] > 1e-4, f"position {j} does not reach itself and the query"

    # and the prediction depends on every kind of input
    base = net(x_t, t, text_emb=text, tokens=tokens)
    for kw in ({"x_t": x_t + 1}, {"t": (t + 7) % 50}, {"text_emb": text + 1}, {"tokens": (tokens + 1) % V}):
        args = dict(x_t=x_t, t=t, text_emb=text, tokens=tokens) | kw
        assert not torch.allclose(net(args.pop("x_t"), args.pop("t"), **args), base)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="heads"):
        tiny_config(heads=3)
    with pytest.raises(ValueError, match="p_uncond_text"):
        tiny_config(p_uncond_text=1.5)
    with pytest.raises(ValueError, match="schedule"):
        tiny_config(schedule="quadratic")
    net = PriorTransformer(tiny_config())
    x_t, t, text, tokens = inputs()
    with pytest.raises(ValueError, match="tokens"):
        net(x_t, t, text_emb=text, tokens=tokens[:, :3])
    with pytest.raises(ValueError, match="text_emb"):
        net(x_t, t, text_emb=text[:, :4], tokens=tokens)
    prior = DiffusionPrior(tiny_config())
    with pytest.raises(KeyError, match="image_emb"):
        prior.loss({"text_emb": text, "tokens": tokens})
    with pytest.raises(ValueError, match="sampler"):
        prior.sample(unit(3, D), tokens, sampler="dpm3")


# --- condition dropout ---------------------------------------------------------------------------


def test_condition_dropout_rate_is_ten_percent():
    prior = DiffusionPrior(tiny_config())
    assert prior.config.p_uncond_text == 0.1
    seen: list[torch.Tensor] = []
    prior.net.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["drop_text"]), with_kwargs=True)
    g = torch.Generator().manual_seed(123)
    B = 200
    batch = {"text_emb": unit(B, D), "image_emb": unit(B, D, seed=1), "tokens": torch.randint(0, V, (B, L))}
    with torch.no_grad():
        for _ in range(40):
            prior.loss(batch, generator=g)
    drops = torch.cat(seen)
    assert drops.dtype == torch.bool and drops.numel() == 40 * B
    rate = drops.float().mean().item()
    assert abs(rate - 0.1) < 0.015, rate  # binomial sd over 8000 draws is 0.0034


def test_dropped_rows_ignore_the_text():
    torch.manual_seed(0)
    B = 6
    batch = {"text_emb": unit(B, D), "image_emb": unit(B, D, seed=1), "tokens": torch.randint(0, V, (B, L))}
    other = dict(batch, text_emb=unit(B, D, seed=5), tokens=torch.randint(0, V, (B, L)))
    always = DiffusionPrior(tiny_config(p_uncond_text=1.0))
    never = DiffusionPrior(tiny_config(p_uncond_text=0.0))
    never.load_state_dict(always.state_dict())

    def loss(model, b):
        return model.loss(b, generator=torch.Generator().manual_seed(7)).item()

    assert loss(always, batch) == pytest.approx(loss(always, other), abs=1e-7)
    assert loss(never, batch) != pytest.approx(loss(never, other), abs=1e-5)


# --- scaling, checkpoints -----------------------------------------------------------------------


def test_scaling_rule_round_trip_and_unit_variance():
    z = unit(4096, 256)
    s = scale_embedding(z)
    assert torch.allclose(s.norm(dim=-1), torch.full((4096,), 16.0), atol=1e-4)
    assert abs(s.var().item() - 1.0) < 0.02
    assert torch.allclose(unscale_embedding(s), z, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    prior = DiffusionPrior(tiny_config(p_uncond_text=0.2, schedule="linear")).eval()
    stem = save_prior(tmp_path / "prior", prior, extra={"note": "test"})
    loaded = load_prior(stem)
    assert loaded.config == prior.config
    x_t, t, text, tokens = inputs()
    assert torch.equal(loaded(x_t, t, text_emb=text, tokens=tokens), prior(x_t, t, text_emb=text, tokens=tokens))
    assert not loaded.training


# --- training ------------------------------------------------------------------------------------


def test_loss_decreases_on_a_tiny_task():
    """Image embedding = a fixed rotation of the text embedding; the prior should learn it."""
    torch.manual_seed(0)
    prior = DiffusionPrior(tiny_config(num_timesteps=100))
    rotation = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(3)))[0]
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        text = F.normalize(torch.randn(64, D, generator=g), dim=-1)
        batch = {"text_emb": text, "image_emb": text @ rotation, "tokens": torch.randint(0, V, (64, L), generator=g)}
        loss = prior.loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:25]) / 25, sum(losses[-25:]) / 25
    assert last < 0.5 * first, (first, last)
    # and its samples move towards the right answer
    text = unit(32, D, seed=9)
    pred = prior.eval().sample(text, torch.randint(0, V, (32, L)), steps=20, generator=torch.Generator().manual_seed(0))
    assert cosine_to_true(pred, text @ rotation) > cosine_to_true(text, text @ rotation) + 0.2


# --- sampling ------------------------------------------------------------------------------------


def test_guidance_scale_one_equals_conditional_sampling():
    torch.manual_seed(0)
    prior = DiffusionPrior(tiny_config()).eval()
    text, tokens = unit(4, D), torch.randint(0, V, (4, L))
    plain = prior.sample(text, tokens, steps=8, generator=torch.Generator().manual_seed(2))
    at_one = prior.sample(text, tokens, steps=8, guidance_scale=1.0, generator=torch.Generator().manual_seed(2))
    at_three = prior.sample(text, tokens, steps=8, guidance_scale=3.0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(plain, at_one, atol=1e-5)
    assert not torch.allclose(plain, at_three, atol=1e-3)
    # at the model level, scale 0 is the model with the text dropped
    x_t, t, stext, _ = inputs(4)
    drop = torch.ones(4, dtype=torch.bool)
    wrapped = guided(prior, 0.0, {"drop_text": drop[:1]})
    cond = dict(text_emb=stext, tokens=tokens, drop_text=torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(wrapped(x_t, t, **cond), prior(x_t, t, text_emb=stext, tokens=tokens, drop_text=drop), atol=1e-5)


def test_sampling_is_seeded():
    prior = DiffusionPrior(tiny_config()).eval()
    text, tokens = unit(2, D), torch.randint(0, V, (2, L))
    a = prior.sample(text, tokens, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(4))
    b = prior.sample(text, tokens, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(4))
    c = prior.sample(text, tokens, steps=5, sampler="ddpm", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_rerank_picks_the_best_scoring_candidate():
    text = torch.eye(3, 4)  # caption b points along axis b
    candidates = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    candidates[0, 3] = torch.tensor([2.0, 0.0, 0.0, 0.0])
    candidates[1, 1] = torch.tensor([0.0, 0.5, 0.0, 0.0])  # short but perfectly aligned: cosine wins
    candidates[2, 4] = torch.tensor([0.1, 0.0, 3.0, 0.0])
    best, index = rerank(candidates, text)
    assert index.tolist() == [3, 1, 4]
    assert torch.equal(best, candidates[torch.arange(3), index])


def test_sample_best_of_returns_the_reranked_sample():
    torch.manual_seed(0)
    prior = DiffusionPrior(tiny_config()).eval()
    text, tokens = unit(3, D), torch.randint(0, V, (3, L))
    best = prior.sample_best_of(text, tokens, n=4, steps=6, generator=torch.Generator().manual_seed(8))
    all4 = prior.sample(text.repeat_interleave(4, 0), tokens.repeat_interleave(4, 0), steps=6,
                        generator=torch.Generator().manual_seed(8)).view(3, 4, D)
    scores = F.cosine_similarity(all4, text[:, None], dim=-1)  # (3, 4)
    assert torch.allclose(best, all4[torch.arange(3), scores.argmax(1)])
    assert (F.cosine_similarity(best, text) >= scores.max(1).values - 1e-6).all()


def test_prior_without_tokens_reads_only_the_text_embedding():
    torch.manual_seed(0)
    cfg = tiny_config(use_tokens=False)
    assert PriorTransformer.sequence_names(cfg) == ["text_emb", "time", "x_t", "query"]
    prior = DiffusionPrior(cfg)
    x_t, t, text, tokens = inputs()
    assert prior.net.embed_sequence(x_t, t, text_emb=text).shape == (3, 4, cfg.width)
    # tokens may be passed (the pipeline always has them) but are not read
    assert torch.equal(prior(x_t, t, text_emb=text, tokens=tokens), prior(x_t, t, text_emb=text))
    with pytest.raises(ValueError, match="tokens"):
        DiffusionPrior(tiny_config())(x_t, t, text_emb=text)
    batch = {"text_emb": unit(3, D), "image_emb": unit(3, D, seed=1)}  # no tokens needed
    assert torch.isfinite(prior.loss(batch))
    assert prior.eval().sample_best_of(unit(2, D), n=2, steps=3, guidance_scale=2.0).shape == (2, D)
