"""Tests for dalle_mini_core.unet: shapes over a config sweep, conditioning, masks, gradients,
batch independence, config round-trip and clear errors. Small configs only (seconds)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from dalle_mini_core.unet import AttentionBlock, ResBlock, UNet, UNetConfig, timestep_embedding

SMALL = dict(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
             attention_resolutions=(8,), num_heads=2, num_groups=4)


def small_config(**overrides) -> UNetConfig:
    return UNetConfig(**{**SMALL, **overrides})


def randomize_zero_params(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """ADM zero-initialises output layers, which hides conditioning and blocks gradients at
    init; give every all-zero parameter small random values so the tests see real behaviour."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def inputs(config: UNetConfig, batch: int = 2, seed: int = 0, n_tokens: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    kw = {}
    if config.cond_dim is not None:
        kw["cond"] = torch.randn(batch, config.cond_dim, generator=g)
    if config.context_dim is not None:
        kw["context"] = torch.randn(batch, n_tokens, config.context_dim, generator=g)
    if config.low_res_channels:
        kw["low_res"] = torch.randn(batch, config.low_res_channels, s, s, generator=g)
    x = torch.randn(batch, config.in_channels, s, s, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return dict(x=x, t=t, **kw)


def call(model: UNet, kw: dict) -> torch.Tensor:
    kw = dict(kw)
    return model(kw.pop("x"), kw.pop("t"), **kw)


def build(config: UNetConfig, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return randomize_zero_params(UNet(config), seed).eval()


# --------------------------------------------------------------------------------------------
# Shapes over a sweep of configs
# --------------------------------------------------------------------------------------------

SWEEP = [
    dict(),
    dict(channel_mult=(1,), attention_resolutions=()),
    dict(channel_mult=(1, 2, 3), image_size=16, attention_resolutions=(16, 4)),
    dict(num_res_blocks=2, attention_resolutions=()),
    dict(out_channels=6, in_channels=1),
    dict(cond_dim=7),
    dict(context_dim=12),
    dict(context_dim=12, cond_dim=5, attention_resolutions=(16, 8)),
    dict(low_res_channels=3),
    dict(image_size=8, channel_mult=(1, 1, 2, 2), attention_resolutions=(1,)),
]


@pytest.mark.parametrize("overrides", SWEEP, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_output_shape_over_config_sweep(overrides):
    config = small_config(**overrides)
    model = UNet(config).eval()
    kw = inputs(config, batch=3)
    with torch.no_grad():
        out = call(model, kw)
    assert out.shape == (3, config.out_channels, config.image_size, config.image_size)
    assert torch.isfinite(out).all()


def test_reference_config_layout():
    """ref32 (ADM layout): 2 down blocks per level, 3 up blocks per level, attention at 16 only."""
    model = UNet(UNetConfig())
    attn_res = []
    for layer in list(model.down) + list(model.up):
        if hasattr(layer, "attn") and layer.attn is not None:
            attn_res.append(layer.attn.qkv.in_channels)
    # 16×16 is the second level (128 channels): 2 down + 3 up attention blocks
    assert attn_res == [128] * 5
    n_res_down = sum(hasattr(layer, "res") for layer in model.down)
    n_res_up = sum(hasattr(layer, "res") for layer in model.up)
    assert (n_res_down, n_res_up) == (6, 9)


def test_untrained_model_predicts_zero():
    """The output conv is zero-initialised (ADM), so ε_θ starts at 0 for any input."""
    config = small_config()
    out = call(UNet(config), inputs(config))
    assert torch.equal(out, torch.zeros_like(out))


# --------------------------------------------------------------------------------------------
# Conditioning
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["t", "cond", "context", "low_res"])
def test_each_conditioning_input_changes_the_output(key):
    config = small_config(cond_dim=6, context_dim=8, low_res_channels=3)
    model = build(config)
    kw = inputs(config)
    other = dict(kw)
    if key == "t":
        other["t"] = (kw["t"] + 100) % 1000
    else:  # a random change (a constant shift would vanish in the context LayerNorm)
        other[key] = kw[key] + torch.randn(kw[key].shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a, b = call(model, kw), call(model, other)
    assert (a - b).abs().max() > 1e-4


def test_context_mask_hides_masked_tokens():
    config = small_config(context_dim=8, attention_resolutions=(16, 8))
    model = build(config)
    kw = inputs(config, batch=2, n_tokens=6)
    mask = torch.tensor([[True, True, True, False, False, False], [True, False, True, False, True, True]])
    kw["context_mask"] = mask
    changed = dict(kw)
    noise = 5.0 * torch.randn(kw["context"].shape, generator=torch.Generator().manual_seed(1))
    changed["context"] = torch.where(mask[..., None], kw["context"], noise)  # only masked tokens change
    with torch.no_grad():
        a, b = call(model, kw), call(model, changed)
        visible = dict(kw, context=kw["context"] + noise)  # unmasked tokens change too
        c = call(model, visible)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (a - c).abs().max() > 1e-3


def test_fully_masked_context_is_finite_and_equals_no_tokens():
    """With every token masked, only the image's own keys remain: same as passing zero tokens."""
    config = small_config(context_dim=8)
    model = build(config)
    kw = inputs(config, n_tokens=4)
    with torch.no_grad():
        masked = call(model, dict(kw, context_mask=torch.zeros(2, 4, dtype=torch.bool)))
        empty = call(model, dict(kw, context=kw["context"][:, :0]))
    assert torch.isfinite(masked).all()
    torch.testing.assert_close(masked, empty, rtol=1e-5, atol=1e-5)


def test_attention_block_with_context_matches_explicit_softmax():
    """Concatenated self+cross attention equals softmax(QKᵀ/√d)V written out by hand."""
    torch.manual_seed(0)
    blk = randomize_zero_params(AttentionBlock(8, 2, num_groups=2, context_dim=5))
    x, ctx = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 5)
    mask = torch.tensor([[True, False, True, True]])
    got = blk(x, ctx, mask)
    h = blk.norm(x).flatten(2).transpose(1, 2)  # (1, 9, 8)
    q, k, v = (h @ blk.qkv.weight.flatten(1).T + blk.qkv.bias).chunk(3, dim=-1)  # 1×1 conv as a matmul
    ck, cv = blk.context_kv(ctx).chunk(2, dim=-1)
    k, v = torch.cat([k, ck], 1), torch.cat([v, cv], 1)  # (1, 13, 8)
    keep = torch.cat([torch.ones(1, 9, dtype=torch.bool), mask], 1)
    heads = []
    for i in range(2):
        sl = slice(4 * i, 4 * i + 4)
        w = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4)
        w = w.masked_fill(~keep[:, None, :], float("-inf")).softmax(-1)
        heads.append(w @ v[..., sl])
    out = torch.cat(heads, -1) @ blk.proj_out.weight.flatten(1).T + blk.proj_out.bias  # (1, 9, 8)
    want = x + out.transpose(1, 2).reshape(1, 8, 3, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_resblock_film_uses_scale_and_shift():
    torch.manual_seed(0)
    blk = randomize_zero_params(ResBlock(8, 8, 6, dropout=0.0, num_groups=2))
    x = torch.randn(2, 8, 4, 4)
    e = torch.randn(2, 6)
    out = blk(x, e)
    h = blk.conv1(torch.nn.functional.silu(blk.norm1(x)))
    s, b = blk.emb_proj(e).chunk(2, dim=1)
    h = blk.norm2(h) * (1 + s[:, :, None, None]) + b[:, :, None, None]
    want = x + blk.conv2(torch.nn.functional.silu(h))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_timestep_embedding_formula():
    t = torch.tensor([0, 3])
    e = timestep_embedding(t, 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(e[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


# --------------------------------------------------------------------------------------------
# Gradients, batch independence, memory layout
# --------------------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    config = small_config(cond_dim=4, context_dim=6, low_res_channels=3)
    model = build(config).train()
    out = call(model, inputs(config))
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_batch_items_are_independent_in_eval_mode():
    config = small_config(cond_dim=4, context_dim=6)
    model = build(config)
    kw = inputs(config, batch=4)
    kw["context_mask"] = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 5, [False] * 5])
    with torch.no_grad():
        full = call(model, kw)
        for i in range(4):
            one = call(model, {k: v[i : i + 1] for k, v in kw.items()})
            torch.testing.assert_close(full[i : i + 1], one, rtol=1e-4, atol=1e-5)


def test_channels_last_gives_the_same_output():
    config = small_config(context_dim=6)
    model = build(config)
    kw = inputs(config)
    with torch.no_grad():
        a = call(model, kw)
        model_cl = model.to(memory_format=torch.channels_last)
        b = call(model_cl, dict(kw, x=kw["x"].contiguous(memory_format=torch.channels_last)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dropout_is_active_in_train_mode_only():
    config = small_config(dropout=0.5)
    model = build(config)
    kw = inputs(config)
    with torch.no_grad():
        e1, e2 = call(model, kw), call(model, kw)
        model.train()
        torch.manual_seed(1)
        d1 = call(model, kw)
        torch.manual_seed(2)
        d2 = call(model, kw)
    assert torch.equal(e1, e2)
    assert not torch.allclose(d1, d2)


# --------------------------------------------------------------------------------------------
# Config: round-trip and clear errors
# --------------------------------------------------------------------------------------------


def test_config_round_trip_via_asdict_and_json():
    config = small_config(cond_dim=4, context_dim=6, low_res_channels=3, dropout=0.1)
    d = dataclasses.asdict(config)
    assert UNetConfig(**d) == config
    via_json = UNetConfig(**json.loads(json.dumps(d)))  # lists come back; stored as tuples
    assert via_json == config
    assert isinstance(via_json.channel_mult, tuple)
    # same config, same seed → same weights
    torch.manual_seed(3)
    a = UNet(config).state_dict()
    torch.manual_seed(3)
    b = UNet(via_json).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_is_keyword_only():
    with pytest.raises(TypeError):
        UNetConfig(32)  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(image_size=20, channel_mult=(1, 2, 2, 2)), "not divisible"),
        (dict(attention_resolutions=(4,)), "not resolutions"),
        (dict(num_groups=5), "num_groups"),
        (dict(num_heads=3), "num_heads"),
        (dict(base_channels=0), "base_channels"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(dropout=1.0), "dropout"),
        (dict(cond_dim=0), "cond_dim"),
    ],
)
def test_bad_config_raises_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        small_config(**overrides)


def test_unet_rejects_non_config():
    with pytest.raises(TypeError, match="UNetConfig"):
        UNet(dict(SMALL))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda kw: kw.update(x=kw["x"][:, :2]), ValueError, "x must have shape"),
        (lambda kw: kw.update(x=kw["x"][..., :8, :8]), ValueError, "x must have shape"),
        (lambda kw: kw.update(x=kw["x"][0]), ValueError, r"\(B, C, H, W\)"),
        (lambda kw: kw.update(t=kw["t"][:1]), ValueError, "t must be"),
        (lambda kw: kw.update(t=kw["t"].float()), TypeError, "integer"),
        (lambda kw: kw.pop("cond"), ValueError, "needs cond"),
        (lambda kw: kw.update(cond=kw["cond"][:, :2]), ValueError, "cond must have shape"),
        (lambda kw: kw.pop("context"), ValueError, "needs context"),
        (lambda kw: kw.update(context=kw["context"][..., :3]), ValueError, "context must have shape"),
        (lambda kw: kw.update(context_mask=torch.ones(2, 5)), TypeError, "bool"),
        (lambda kw: kw.update(context_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "context_mask"),
        (lambda kw: kw.pop("low_res"), ValueError, "needs low_res"),
        (lambda kw: kw.update(low_res=kw["low_res"][..., :8, :8]), ValueError, "low_res must have shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, exc, match):
    config = small_config(cond_dim=4, context_dim=6, low_res_channels=3)
    model = UNet(config)
    kw = inputs(config)
    change(kw)
    with pytest.raises(exc, match=match):
        call(model, kw)


@pytest.mark.parametrize("key, value", [("cond", torch.zeros(2, 4)), ("context", torch.zeros(2, 3, 6)),
                                        ("low_res", torch.zeros(2, 3, 16, 16))])
def test_unexpected_conditioning_raises(key, value):
    config = small_config()
    model = UNet(config)
    kw = inputs(config)
    kw[key] = value
    with pytest.raises(ValueError, match=key):
        call(model, kw)
