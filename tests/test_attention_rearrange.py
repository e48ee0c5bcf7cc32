"""The attention layers read their shape changes as `einops.rearrange` patterns; the numbers are the
ones the view/permute code gave (the shipped weights must draw the same pictures).

Each test runs a layer and, beside it, the same layer's maths written with view/permute/reshape
(the form the code had before), and asserts bit-identical outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dalle_mini_core.decoder import DecoderConfig, DecoderNet, FourierPosition2d
from dalle_mini_core.prior import CausalSelfAttention
from dalle_mini_core.unet import AttentionBlock, UNetConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module.eval()


def attention_by_view(block: AttentionBlock, x, context=None, context_mask=None):
    """`AttentionBlock.forward` written with view/permute."""
    B, C, H, W = x.shape
    nh, L = block.num_heads, H * W
    qkv = block.qkv(block.norm(x)).permute(0, 2, 3, 1).reshape(B, L, 3 * C)
    q, k, v = qkv.view(B, L, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
    mask = None
    if context is not None:
        N = context.shape[1]
        ck, cv = block.context_kv(context).view(B, N, 2, nh, C // nh).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([k, ck], dim=2), torch.cat([v, cv], dim=2)
        if context_mask is not None:
            mask = torch.cat([context_mask.new_ones(B, L), context_mask], dim=1)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = out.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
    return x + block.proj_out(out)


def test_unet_attention_is_bit_identical_to_the_view_permute_form():
    block = randomize(AttentionBlock(32, 4, num_groups=8, context_dim=12), 0)
    x = torch.randn(2, 32, 6, 5, generator=gen(1))
    ctx = torch.randn(2, 3, 12, generator=gen(2))
    mask = torch.tensor([[True, False, False], [True, True, True]])
    with torch.no_grad():
        for args in ((), (ctx,), (ctx, mask)):
            got, want = block(x, *args), attention_by_view(block, x, *args)
            assert got.shape == x.shape and torch.equal(got, want)
        # channels_last, as the pipeline runs on a CPU: same numbers, and the output keeps that layout
        block_cl = block.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        got = block_cl(x_cl, ctx, mask)
        assert torch.equal(got, attention_by_view(block_cl, x_cl, ctx, mask))
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_prior_attention_is_bit_identical_to_the_view_permute_form():
    attn = randomize(CausalSelfAttention(24, 3), 3)
    h = torch.randn(2, 7, 24, generator=gen(4))
    with torch.no_grad():
        B, N, C = h.shape
        q, k, v = attn.qkv(h).view(B, N, 3, 3, C // 3).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        want = attn.proj(out.transpose(1, 2).reshape(B, N, C))
        assert torch.equal(attn(h), want)
        # causal: changing the last token leaves the outputs of the earlier ones unchanged
        h2 = h.clone()
        h2[:, -1] += 1.0
        assert torch.equal(attn(h2)[:, :-1], attn(h)[:, :-1])


def test_decoder_context_tokens_and_positions_are_bit_identical_to_the_view_form():
    cfg = DecoderConfig(unet=UNetConfig(image_size=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                        num_groups=8, attention_resolutions=(4,), num_heads=2),
                        embed_dim=8, context_width=16, spatial="map", map_channels=2, map_size=4)
    net = randomize(DecoderNet(cfg), 5)
    emb = torch.randn(3, 8, generator=gen(6))
    with torch.no_grad():
        c = net.conditioning(emb)
        assert torch.equal(c["context"], net.image_to_tokens(emb).view(3, 4, 16))  # four image tokens of width 16
        low = F.interpolate(net.spatial_map(emb).view(3, 2, 4, 4), size=(8, 8), mode="bilinear", align_corners=False)
        assert torch.equal(c["low_res"], low)
        pos = randomize(FourierPosition2d(16, 3), 7)
        want = pos.proj(pos.features(5, 6)).permute(2, 0, 1).unsqueeze(0)
        assert pos(5, 6).shape == (1, 16, 5, 6) and torch.equal(pos(5, 6), want)
