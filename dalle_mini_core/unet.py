"""The denoiser: an ADM-style U-Net, built from small pieces.

Where the ideas come from:

* U-Net with a residual block per step and skip connections between the down and up paths,
  predicting the noise ε (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", §4 and
  Appendix B; Ronneberger et al. 2015 for the U-Net itself).
* Sinusoidal embedding of the timestep t (Vaswani et al. 2017, §3.5), passed through an MLP
  (Ho et al. 2020, Appendix B).
* Scale-shift ("FiLM") conditioning of each residual block by the embedding vector,
  ``GroupNorm(h)·(1 + s) + b`` (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §3,
  "adaptive group normalization"; Perez et al. 2018 for FiLM).
* Self-attention at chosen resolutions, several heads, an extra residual block at the bottom
  (Dhariwal & Nichol 2021, §3).
* Cross-attention to conditioning tokens the GLIDE / ADM way (Nichol et al. 2022, §2.3): each
  attention layer projects the context tokens to extra keys and values and *concatenates* them
  to the image's own keys and values, so one attention call does self- and cross-attention.
  A key-padding mask removes padded context tokens from that call. The image's own keys are
  always present, so a sample whose context is fully masked is still well defined.
* A global conditioning vector (a CLIP image embedding in unCLIP, Ramesh et al. 2022, §2.1) is
  projected and added to the time embedding; a low-resolution image is concatenated to the
  input channels for the upsamplers (Saharia et al. 2021 "SR3"; Ramesh et al. 2022, §2.1).

Paper symbol → code name: x_t → ``x``, t → ``t``, ε_θ(x_t, t) → the return value, the
embedding vector e(t, c) → ``emb``.

Speed: the model is laid out for ``channels_last`` (``model.to(memory_format=
torch.channels_last)``): convolutions then need no layout reorders, and attention reads its
tokens ``(B, H·W, C)`` as a free view. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel where the backend has one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "UNetConfig",
    "UNet",
    "timestep_embedding",
    "TimeEmbedding",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class UNetConfig:
    """Shape of a U-Net. Every field has a default: the reference 32×32 RGB denoiser."""

    image_size: int = 32  # height = width of x_t, in pixels
    in_channels: int = 3  # channels of x_t (3 for RGB)
    out_channels: int = 3  # channels predicted (3 for ε; 6 when a variance is learned too)
    base_channels: int = 64  # channels at full resolution; level i has base·channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per level; resolution halves between levels
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (16,)  # resolutions (pixels) with self-attention
    num_heads: int = 4  # attention heads (each head has channels // num_heads channels)
    dropout: float = 0.0  # dropout inside each residual block, before its last convolution
    cond_dim: int | None = None  # size of a global conditioning vector `cond` (None: no `cond`)
    context_dim: int | None = None  # width of cross-attention tokens `context` (None: none)
    low_res_channels: int = 0  # channels of a low-res image concatenated at the input (upsampler)
    num_groups: int = 32  # GroupNorm groups; must divide every channel count
    time_embed_mult: int = 4  # width of the time embedding = time_embed_mult · base_channels

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; accept any sequence of ints and keep a tuple.
        for name in ("channel_mult", "attention_resolutions"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
            setattr(self, name, tuple(value))
        self.validate()

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size at each level, e.g. (32, 16, 8)."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mult)))

    @property
    def time_embed_dim(self) -> int:
        """Width of the embedding vector that conditions every residual block."""
        return self.time_embed_mult * self.base_channels

    def validate(self) -> None:
        """Raise a clear ValueError/TypeError for a config that cannot build a U-Net."""
        ints = ("image_size", "in_channels", "out_channels", "base_channels", "num_res_blocks",
                "num_heads", "num_groups", "time_embed_mult")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.low_res_channels, int) or self.low_res_channels < 0:
            raise ValueError(f"low_res_channels must be an int >= 0, got {self.low_res_channels!r}")
        for name in ("cond_dim", "context_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult!r}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by 2**(levels-1)={factor} "
                f"({len(self.channel_mult)} levels in channel_mult={self.channel_mult})"
            )
        missing = [r for r in self.attention_resolutions if r not in self.resolutions]
        if missing:
            raise ValueError(
                f"attention_resolutions {missing} are not resolutions of this U-Net; "
                f"its levels are at {self.resolutions}"
            )
        if self.base_channels % self.num_groups:
            raise ValueError(f"num_groups={self.num_groups} must divide base_channels={self.base_channels}")
        for m in self.channel_mult:
            ch = self.base_channels * m
            if ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide every level's channels; {ch} is not divisible")
        if self.time_embed_dim % 2 or self.base_channels % 2:
            raise ValueError(f"base_channels must be even for the sinusoidal embedding, got {self.base_channels}")


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity (ADM, §3)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, §3.5): (B,) → (B, dim).

    Frequencies ω_k = max_period^(-k / (dim/2)), k = 0..dim/2-1; output [cos(t·ω), sin(t·ω)].
    """
    if t.dim() != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / half)  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


class TimeEmbedding(nn.Module):
    """t → sinusoid → Linear → SiLU → Linear (Ho et al. 2020, Appendix B)."""

    def __init__(self, base_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.base_channels = base_channels
        self.mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.base_channels))  # (B, embed_dim)


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning (Dhariwal & Nichol 2021, §3, AdaGN).

    h = conv(SiLU(GN(x)));  h = GN(h)·(1 + s) + b  with (s, b) = Linear(SiLU(emb));
    out = skip(x) + conv(dropout(SiLU(h))), the last conv zero-initialised.
    """

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, *, dropout: float, num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels)  # → (scale, shift)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb_act: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W), emb_act = SiLU(emb) (B, E) → (B, C_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb_act)[:, :, None, None].chunk(2, dim=1)  # 2 × (B, C_out, 1, 1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # FiLM in one pass
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, optionally also over context tokens.

    Cross-attention is GLIDE-style (Nichol et al. 2022, §2.3): context tokens are projected to
    keys/values and concatenated to the image's keys/values, so one fused attention call does
    both. `context_mask` (B, N) bool, True = a real token, masks padded tokens out as keys.
    """

    def __init__(self, channels: int, num_heads: int, *, num_groups: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        # Projections are 1×1 convolutions rather than Linear layers on (B, H·W, C) tokens: the
        # same maths, but on CPU the convolution runs in oneDNN on the channels_last tensor as
        # it is, which measured 2-3× faster than the BLAS matmul behind nn.Linear here.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.context_kv = nn.Linear(context_dim, 2 * channels) if context_dim is not None else None
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, C, H, W = x.shape
        heads = self.num_heads
        # the image as L = H·W tokens of 3C channels each ([q | k | v]): a view, contiguous if channels_last
        qkv = rearrange(self.qkv(self.norm(x)), "b c h w -> b (h w) c")
        # each token's q, k, v split into `heads` pieces of d = C / heads channels
        q, k, v = rearrange(qkv, "b l (three heads d) -> three b heads l d", three=3, heads=heads)
        mask = None
        if self.context_kv is not None and context is not None:
            ck, cv = rearrange(self.context_kv(context), "b n (two heads d) -> two b heads n d", two=2, heads=heads)
            k = torch.cat([k, ck], dim=2)  # (B, heads, L + N, d)
            v = torch.cat([v, cv], dim=2)
            if context_mask is not None:
                keep_image = context_mask.new_ones(B, H * W)
                mask = torch.cat([keep_image, context_mask], dim=1)[:, None, None, :]  # (B, 1, 1, L + N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, L, d)
        # tokens back to an image: laid out (B, H, W, C) in memory (channels_last), seen as (B, C, H, W);
        # `rearrange(out, "b heads (h w) d -> b (heads d) h w", h=H)` has the same values, channels first
        out = rearrange(out, "b heads (h w) d -> b h w (heads d)", h=H).permute(0, 3, 1, 2)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3×3 convolution (Ho et al. 2020)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour ×2, then a 3×3 convolution (Ho et al. 2020)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResAttn(nn.Module):
    """One step of either path: a ResBlock, then (at attention resolutions) an AttentionBlock."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, h, emb_act, context=None, context_mask=None):
        h = self.res(h, emb_act)
        if self.attn is not None:
            h = self.attn(h, context, context_mask)
        return h


# --------------------------------------------------------------------------------------------
# The U-Net
# --------------------------------------------------------------------------------------------


class UNet(nn.Module):
    """ADM-style U-Net ε_θ(x_t, t, cond, context, low_res) (Dhariwal & Nichol 2021, §3).

    Layout (with channel_mult=(1, 2, 2), num_res_blocks=2, 32×32):
      in conv → level 32: 2 ResBlocks → down → level 16: 2 ResBlocks (+attn) → down →
      level 8: 2 ResBlocks → middle: ResBlock, attn, ResBlock → up path mirrored with
      num_res_blocks + 1 blocks per level, each taking one skip → GN, SiLU, zero conv.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        config.validate()
        self.config = c = config
        E, g = c.time_embed_dim, c.num_groups

        def res_attn(cin: int, cout: int, res: int) -> ResAttn:
            rb = ResBlock(cin, cout, E, dropout=c.dropout, num_groups=g)
            at = None
            if res in c.attention_resolutions:
                at = AttentionBlock(cout, c.num_heads, num_groups=g, context_dim=c.context_dim)
            return ResAttn(rb, at)

        # 1. Embeddings: time, plus the optional global conditioning vector.
        self.time_embed = TimeEmbedding(c.base_channels, E)
        self.cond_proj = nn.Linear(c.cond_dim, E) if c.cond_dim is not None else None
        self.context_norm = nn.LayerNorm(c.context_dim) if c.context_dim is not None else None

        # 2. Down path; remember every output's channel count for the skips.
        ch = c.base_channels * c.channel_mult[0]
        self.input_conv = nn.Conv2d(c.in_channels + c.low_res_channels, ch, 3, padding=1)
        skip_channels = [ch]
        self.down = nn.ModuleList()
        for level, (mult, res) in enumerate(zip(c.channel_mult, c.resolutions)):
            for _ in range(c.num_res_blocks):
                self.down.append(res_attn(ch, c.base_channels * mult, res))
                ch = c.base_channels * mult
                skip_channels.append(ch)
            if level < len(c.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)

        # 3. Middle: ResBlock, attention, ResBlock at the lowest resolution.
        self.mid_res1 = ResBlock(ch, ch, E, dropout=c.dropout, num_groups=g)
        self.mid_attn = AttentionBlock(ch, c.num_heads, num_groups=g, context_dim=c.context_dim)
        self.mid_res2 = ResBlock(ch, ch, E, dropout=c.dropout, num_groups=g)

        # 4. Up path: num_res_blocks + 1 blocks per level, each eats one skip; upsample between levels.
        self.up = nn.ModuleList()
        for level in reversed(range(len(c.channel_mult))):
            mult, res = c.channel_mult[level], c.resolutions[level]
            for _ in range(c.num_res_blocks + 1):
                self.up.append(res_attn(ch + skip_channels.pop(), c.base_channels * mult, res))
                ch = c.base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch))

        # 5. Output: GN, SiLU, zero-initialised conv (ADM), so the untrained model predicts 0.
        self.out_norm = nn.GroupNorm(g, ch)
        self.out_conv = zero_module(nn.Conv2d(ch, c.out_channels, 3, padding=1))

    # ----------------------------------------------------------------------------------------

    def _check_inputs(self, x, t, cond, context, context_mask, low_res) -> None:
        """Short, clear errors for wrong shapes or missing/unexpected conditioning."""
        c = self.config
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        B = x.shape[0]
        want = (c.in_channels, c.image_size, c.image_size)
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")
        if not torch.is_tensor(t) or t.shape != (B,):
            raise ValueError(f"t must be a tensor of shape ({B},) (one timestep per image), got {getattr(t, 'shape', t)}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timestep indices (torch.long), got {t.dtype}")
        # global conditioning vector
        if c.cond_dim is None and cond is not None:
            raise ValueError("cond was given but this U-Net has cond_dim=None")
        if c.cond_dim is not None:
            if cond is None:
                raise ValueError(f"this U-Net needs cond of shape (B, {c.cond_dim}) (cond_dim={c.cond_dim})")
            if cond.shape != (B, c.cond_dim):
                raise ValueError(f"cond must have shape ({B}, {c.cond_dim}), got {tuple(cond.shape)}")
        # context tokens
        if c.context_dim is None and (context is not None or context_mask is not None):
            raise ValueError("context/context_mask was given but this U-Net has context_dim=None")
        if c.context_dim is not None:
            if context is None:
                raise ValueError(f"this U-Net needs context of shape (B, N, {c.context_dim}) (context_dim={c.context_dim})")
            if context.dim() != 3 or context.shape[0] != B or context.shape[2] != c.context_dim:
                raise ValueError(f"context must have shape ({B}, N, {c.context_dim}), got {tuple(context.shape)}")
            if context_mask is not None:
                if context_mask.dtype != torch.bool:
                    raise TypeError(f"context_mask must be a bool tensor (True = real token), got {context_mask.dtype}")
                if context_mask.shape != context.shape[:2]:
                    raise ValueError(f"context_mask must have shape {tuple(context.shape[:2])}, got {tuple(context_mask.shape)}")
        # low-resolution image for the upsampler
        if c.low_res_channels == 0 and low_res is not None:
            raise ValueError("low_res was given but this U-Net has low_res_channels=0")
        if c.low_res_channels:
            if low_res is None:
                raise ValueError(
                    f"this U-Net needs low_res of shape (B, {c.low_res_channels}, {c.image_size}, {c.image_size}) "
                    "(upsample the low-resolution image to image_size first)"
                )
            want = (B, c.low_res_channels, c.image_size, c.image_size)
            if tuple(low_res.shape) != want:
                raise ValueError(f"low_res must have shape {want} (already upsampled to image_size), got {tuple(low_res.shape)}")

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        cond: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        low_res: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict from x_t (B, in_channels, S, S) at timesteps t (B,) → (B, out_channels, S, S).

        cond: (B, cond_dim) global vector, added (after a Linear) to the time embedding.
        context: (B, N, context_dim) tokens for cross-attention; context_mask: (B, N) bool.
        low_res: (B, low_res_channels, S, S), concatenated to x at the input.
        """
        self._check_inputs(x, t, cond, context, context_mask, low_res)

        # 1. The embedding vector e(t, c) that conditions every ResBlock; SiLU'd once, shared.
        emb = self.time_embed(t)  # (B, E)
        if self.cond_proj is not None:
            emb = emb + self.cond_proj(cond)
        emb_act = F.silu(emb)
        if self.context_norm is not None:
            context = self.context_norm(context)  # (B, N, context_dim)

        # 2. Down path, keeping every output for the skips.
        h = x if low_res is None else torch.cat([x, low_res], dim=1)  # (B, C_in + C_low, S, S)
        h = self.input_conv(h)
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Downsample) else layer(h, emb_act, context, context_mask)
            skips.append(h)

        # 3. Middle.
        h = self.mid_res1(h, emb_act)
        h = self.mid_attn(h, context, context_mask)
        h = self.mid_res2(h, emb_act)

        # 4. Up path: each ResBlock takes the matching skip, concatenated on channels.
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb_act, context, context_mask)

        # 5. Output head.
        return self.out_conv(F.silu(self.out_norm(h)))
