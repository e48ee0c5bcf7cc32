"""Tests of the unCLIP decoder: conditioning paths, dropout, null embeddings, spatial options,
sampling determinism, checkpoints. Tiny U-Nets (16×16) so the whole file runs in seconds."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from dalle_mini_core.checkpoints import load_checkpoint, save_checkpoint
from dalle_mini_core.decoder import (
    INVERSION_T_MAX,
    Decoder,
    DecoderConfig,
    PositionalAttention,
)
from dalle_mini_core.diffusion import scale_embedding
from dalle_mini_core.unet import AttentionBlock, UNetConfig

D = 8


def tiny_config(**overrides) -> DecoderConfig:
    unet = UNetConfig(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(8,), num_heads=2, num_groups=8)
    fields = dict(unet=unet, embed_dim=D, context_width=16, context_length=8, vocab_size=50, text_heads=2)
    fields.update(overrides)
    return DecoderConfig(**fields)


def randomize_zero_params(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised output layers make an untrained U-Net ignore its inputs; give them weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def make(seed: int = 0, **overrides) -> Decoder:
    torch.manual_seed(seed)
    return randomize_zero_params(Decoder(tiny_config(**overrides)), seed).eval()


def unit(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def net_output(decoder: Decoder, emb: torch.Tensor, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(emb.shape[0], 3, 16, 16, generator=g)
    t = torch.full((emb.shape[0],), 500, dtype=torch.long)
    with torch.no_grad():
        return decoder(x, t, **decoder.model_kwargs(emb, kw.pop("tokens", None)), **kw)


# --- config -------------------------------------------------------------------------------------

def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="spatial"):
        tiny_config(spatial="everywhere")
    with pytest.raises(ValueError, match="p_drop_image"):
        tiny_config(p_drop_image=1.5)
    with pytest.raises(ValueError, match="set by the decoder"):
        tiny_config(unet=UNetConfig(image_size=16, base_channels=16, channel_mult=(1, 2), num_groups=8,
                                    attention_resolutions=(8,), cond_dim=3))
    with pytest.raises(TypeError, match="DecoderConfig"):
        Decoder(tiny_config().unet)


def test_unet_gets_the_conditioning_inputs():
    c = tiny_config(spatial="map", map_channels=3)
    u = c.unet_config()
    assert (u.cond_dim, u.context_dim, u.low_res_channels) == (D, 16, 3)
    assert tiny_config().unet_config().low_res_channels == 0


# --- the two conditioning paths, each alone ------------------------------------------------------

def test_embedding_changes_output_through_time_embedding_path_alone():
    dec = make()
    with torch.no_grad():  # cut the context-token path: the tokens no longer depend on z_i
        dec.net.image_to_tokens.weight.zero_()
    a, b = net_output(dec, unit(2, 0)), net_output(dec, unit(2, 1))
    assert not torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # cut the time-embedding path too: now z_i cannot reach the output
        dec.net.unet.cond_proj.weight.zero_()
    a, b = net_output(dec, unit(2, 0)), net_output(dec, unit(2, 1))
    torch.testing.assert_close(a, b)


def test_embedding_changes_output_through_context_tokens_alone():
    dec = make()
    with torch.no_grad():  # cut the time-embedding path
        dec.net.unet.cond_proj.weight.zero_()
    a, b = net_output(dec, unit(2, 0)), net_output(dec, unit(2, 1))
    assert not torch.allclose(a, b, atol=1e-5)
    assert dec.net.conditioning(scale_embedding(unit(2, 0)))["context"].shape == (2, 4, 16)  # four image tokens


def test_caption_tokens_reach_the_output():
    dec = make(use_text=True)
    emb = unit(2, 0)
    tok_a = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    tok_b = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(net_output(dec, emb, tokens=tok_a), net_output(dec, emb, tokens=tok_b), atol=1e-5)
    with pytest.raises(ValueError, match="use_text=True"):
        dec.model_kwargs(emb)
    with pytest.raises(ValueError, match="use_text=False"):
        make().model_kwargs(emb, torch.zeros(2, 8, dtype=torch.long))


# --- condition dropout and null embeddings --------------------------------------------------------

def test_dropout_rates_match_config():
    dec = make(use_text=True, p_drop_image=0.1, p_drop_text=0.5)
    drops = dec.draw_dropout(20000, torch.Generator().manual_seed(0))
    assert abs(drops["drop_image"].float().mean().item() - 0.1) < 0.01
    assert abs(drops["drop_text"].float().mean().item() - 0.5) < 0.015
    # the two are drawn independently
    both = (drops["drop_image"] & drops["drop_text"]).float().mean().item()
    assert abs(both - 0.05) < 0.01
    again = dec.draw_dropout(20000, torch.Generator().manual_seed(0))
    assert torch.equal(drops["drop_image"], again["drop_image"])


def test_dropped_rows_use_the_learned_null_embedding():
    dec = make(use_text=True)
    emb = scale_embedding(unit(3, 0))
    tokens = torch.randint(1, 50, (3, 8), generator=torch.Generator().manual_seed(0))
    drop = torch.tensor([True, False, True])
    cond = dec.net.conditioning(emb, tokens, drop_image=drop, drop_text=drop)
    torch.testing.assert_close(cond["cond"][0], dec.net.null_image_emb.detach())
    torch.testing.assert_close(cond["cond"][1], emb[1])
    # a dropped row's output no longer depends on its embedding or caption
    other = dec.net.conditioning(scale_embedding(unit(3, 5)), tokens.flip(0), drop_image=drop, drop_text=drop)
    torch.testing.assert_close(cond["context"][0], other["context"][0])
    assert not torch.allclose(cond["context"][1], other["context"][1])
    assert cond["context_mask"][0].all()  # null caption tokens are all attended to


def test_null_embedding_is_learned_and_receives_gradient():
    dec = make(p_drop_image=1.0).train()
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "image_emb": unit(4, 0)}
    dec.loss(batch, generator=torch.Generator().manual_seed(0)).backward()
    assert dec.net.null_image_emb.grad is not None and dec.net.null_image_emb.grad.abs().sum() > 0
    assert dec.net.image_to_tokens.weight.grad is not None


def test_loss_is_seeded_and_checks_its_batch():
    dec = make().train()
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "image_emb": unit(4, 0)}
    a = dec.loss(batch, generator=torch.Generator().manual_seed(3))
    b = dec.loss(batch, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item() and a.dim() == 0
    with pytest.raises(KeyError, match="image_emb"):
        dec.loss({"image": batch["image"]})
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        dec.loss({"image": batch["image"], "image_emb": torch.randn(4, 5)})


# --- the spatial path ------------------------------------------------------------------------------

def _qkv_inputs(decoder: Decoder, emb: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    hooks = [m.qkv.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
             for m in decoder.modules() if hasattr(m, "qkv")]
    net_output(decoder, emb)
    for h in hooks:
        h.remove()
    return seen


def test_positional_option_changes_what_attention_reads():
    dec = make(spatial="attention")
    wrapped = [m for m in dec.modules() if isinstance(m, PositionalAttention)]
    plain = [m for m in make().modules() if isinstance(m, AttentionBlock)]
    assert len(wrapped) == len(plain) == 1 + 2 + 1  # down (1) and up (2) blocks at 8×8, plus the middle
    emb = unit(2, 0)
    with_pos = _qkv_inputs(dec, emb)
    with torch.no_grad():
        for m in wrapped:
            m.position.proj.weight.zero_()
            m.position.proj.bias.zero_()
    without_pos = _qkv_inputs(dec, emb)
    assert len(with_pos) == len(without_pos) == 4
    first_with, first_without = with_pos[0], without_pos[0]  # (B, H·W, C) at the first attention
    assert not torch.allclose(first_with, first_without, atol=1e-4)
    # the difference depends on the position: the tokens get different offsets
    diff = (first_with - first_without)[0]  # (H·W, C)
    assert (diff - diff.mean(dim=0)).abs().max() > 1e-3
    # positions enter the attention only: a zero embedding leaves the residual stream as plain x
    x = torch.randn(1, 32, 8, 8)
    block = wrapped[0]
    torch.testing.assert_close(block(x), block.attention(x))


def test_map_option_feeds_a_spatial_map_that_depends_on_the_embedding():
    dec = make(spatial="map")
    a = dec.net.conditioning(scale_embedding(unit(1, 0)))["low_res"]
    b = dec.net.conditioning(scale_embedding(unit(1, 1)))["low_res"]
    assert a.shape == (1, 4, 16, 16)
    assert not torch.allclose(a, b)
    assert a[0, 0].std() > 0  # varies over the image


# --- sampling and checkpoints -------------------------------------------------------------------

@pytest.mark.parametrize("guidance_scale", [None, 3.0])
def test_sample_same_seed_same_images(guidance_scale):
    dec = make(spatial="attention")
    emb = unit(2, 0)
    a = dec.sample(emb, steps=3, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    b = dec.sample(emb, steps=3, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    c = dec.sample(emb, steps=3, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 16, 16) and a.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_guidance_scale_one_equals_conditional_and_zero_equals_null():
    dec = make(use_text=True)
    emb, tokens = unit(2, 0), torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    kw = dict(tokens=tokens, steps=2, sampler="ddpm")
    cond = dec.sample(emb, guidance_scale=None, generator=torch.Generator().manual_seed(0), **kw)
    one = dec.sample(emb, guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kw)
    # equal up to float rounding (batch 2 vs a guided batch of 4; x̂₀ clipping can amplify a rounding
    # difference at a single pixel), so compare the mean difference
    assert (cond - one).abs().mean() < 1e-4
    zero_a = dec.sample(emb, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), **kw)
    zero_b = dec.sample(unit(2, 9), guidance_scale=0.0, generator=torch.Generator().manual_seed(0),
                        tokens=tokens.flip(0), steps=2, sampler="ddpm")
    assert (zero_a - zero_b).abs().mean() < 1e-4  # the null model ignores the condition
    assert (zero_a - cond).abs().mean() > 1e-3


def test_invert_is_deterministic_and_conditioned():
    dec = make()
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b = dec.invert(x0, unit(2, 0), steps=2), dec.invert(x0, unit(2, 0), steps=2)
    assert a.shape == x0.shape
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, dec.invert(x0, unit(2, 1), steps=2))
    with pytest.raises(ValueError, match="images must be"):
        dec.invert(x0[:, :, :8], unit(2, 0), steps=2)


def test_inversion_schedule_stops_short_of_the_last_level():
    dec = make()
    sched = dec.inversion_schedule(20)
    assert sched.num_timesteps == 20
    assert int(sched.timestep_map[0]) == 0 and int(sched.timestep_map[-1]) == INVERSION_T_MAX
    assert float(sched.alphas_cumprod[-1]) > 1e-3  # vs ≈ 2e-9 at T − 1 on the cosine schedule
    with pytest.raises(ValueError, match="steps must be"):
        dec.inversion_schedule(1)
    with pytest.raises(ValueError, match="inverted=True needs"):
        dec.sample(unit(1, 0), steps=2, inverted=True)


def test_shipped_decoder_reconstructs_an_inverted_image():
    """The bipartite latent (z_i, x_T) of a real scene decodes back to it (Ramesh et al. §3.1)."""
    from dalle_mini_core.checkpoints import load_pretrained
    from dalle_mini_core.data.shapes import ShapesDataset

    try:
        clip, dec = load_pretrained("shapes_clip").float().eval(), load_pretrained("shapes_decoder").float().eval()
    except FileNotFoundError:
        pytest.skip("shapes pipeline weights not shipped")
    x = ShapesDataset("test", length=1, image_size=32, num_objects=1, seed=1)[0][0][None]
    with torch.no_grad():
        z = clip.encode_image(x)
        x_T = dec.invert(x, z, steps=50)
        back = dec.sample(z, x_T=x_T, inverted=True, steps=50, guidance_scale=None)
        # the same x_T run on the full schedule to T − 1: the inversion error blows up there
        wrong = dec.sample(z, x_T=x_T, steps=50, guidance_scale=None)
    err, err_wrong = (back - x).abs().mean().item(), (wrong - x).abs().mean().item()
    assert err < 0.05 and err < err_wrong / 2, (err, err_wrong)


def test_save_and_load_round_trip(tmp_path):
    dec = make(spatial="attention", use_text=True)
    stem = save_checkpoint(tmp_path / "decoder", dec, dec.config)
    loaded = load_checkpoint(stem, Decoder).eval()
    assert loaded.config == dec.config
    emb, tokens = unit(2, 0), torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net_output(loaded, emb, tokens=tokens), net_output(dec, emb, tokens=tokens))


def test_emoji_bank_on_the_test_split():
    from dalle_mini_core.clip import CLIPModel, clip_config
    from dalle_mini_core.banks import BankSpec, embed, make, render

    torch.manual_seed(0)
    clip = CLIPModel(clip_config("emoji")).eval()
    bank = make(BankSpec("emoji", 82, 32, embedded=True, split="test"), clip=clip)  # the 82 test emoji
    n = len(bank["caption"])
    assert bank["image"].shape == (n, 3, 32, 32) and bank["image_emb"].shape == (n, clip.embed_dim)
    assert torch.allclose(bank["image_emb"].norm(dim=-1), torch.ones(n), atol=1e-4)
    assert bank["image"].min() >= -1 and bank["image"].max() <= 1 and bank["tokens"].shape[0] == n
    with pytest.raises(ValueError, match="image_size"):
        embed(clip, render("emoji", 2, image_size=64, split="test"), image_size=48)
