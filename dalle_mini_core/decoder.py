"""The unCLIP decoder: a diffusion U-Net that draws an image from a CLIP image embedding.

Ramesh et al. 2022 ("Hierarchical Text-Conditional Image Generation with CLIP Latents", §2.1)
modify the GLIDE text-to-image U-Net (Nichol et al. 2022) so that it inverts CLIP's image
encoder. The embedding z_i reaches the U-Net by two paths:

1. **time-embedding shift** — z_i is projected and *added to the timestep embedding*, so every
   residual block is scale-shifted by it (the U-Net's ``cond``);
2. **context tokens** — z_i is projected to *four extra tokens* that every attention layer reads
   next to its own image tokens (the U-Net's ``context``, GLIDE-style concatenated keys/values).

Optionally the caption is a third input (GLIDE's text encoder; unCLIP keeps it but finds it
adds little): its tokens are embedded by a small transformer and appended to the context.

**Classifier-free guidance** (Ho & Salimans 2022). During training the embedding is replaced
by a learned null embedding 10% of the time and the caption by learned null tokens 50% of the
time (Ramesh et al. 2022, §2.1); at sampling, `sampling.guided` mixes the conditional output
with the one where both are dropped: ε̃ = ε(∅) + s·(ε(z_i) − ε(∅)).

**Where things are (the spatial path).** A global vector tells every pixel the same thing, so
whether a U-Net conditioned that way can learn *where* to draw is a fair question (zero-padded
convolutions give its features some sense of place; see the measurement below). The option
``spatial``, a course addition that is not in the paper, adds a path that can say "where":

* ``"attention"`` — a 2-D positional embedding (Fourier features of the pixel's (y, x), through
  a learned linear map) is added to the features that every attention layer reads, so a query
  knows its position and its affinity to the embedding's context tokens can depend on it
  (as a ViT's patch positions do, Dosovitskiy et al. 2021). The positions enter the attention
  only: the residual stream is left unchanged (`PositionalAttention`).
* ``"map"`` — the embedding is projected to a small spatial map (m channels at s×s pixels),
  upsampled bilinearly to the image size and concatenated to the U-Net's input channels: a
  direct "what goes where" sketch, in the spirit of spatial conditioning maps (e.g. the
  layout-to-image models; here it is learned from the embedding).

Measured once offline (reported in notebook 08, §7, from the record
``data/weights/reports/position_experiment_cpu.json``; 600 CPU steps of 32 one-object scenes, 150
decoded test scenes, one standard error ±0.04):
position right 0.59 with the time-embedding shift alone, 0.65 with the four context tokens (the
paper's decoder, ``spatial="none"``), 0.70 with ``"attention"``, 0.67 with ``"map"`` (chance 0.11).
With a CLIP image embedding, position is learnable without an explicit path (zero-padded
convolutions tell pixels where the borders are); the explicit paths scored somewhat higher, by at
most +0.11 (two standard errors of a difference: suggestive, not proven).

Embedding scale: CLIP embeddings are unit vectors; the decoder multiplies them by sqrt(D)
before use (`diffusion.scale_embedding`, the one rule of the course).

Code names ↔ paper symbols: ``image_emb`` = z_i, ``x_t`` = x_t, ``tokens`` = the caption y,
``guidance_scale`` = s.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .diffusion import Denoiser, check_embeddings, scale_embedding
from .options import Prediction, ScheduleKind, check_prediction, check_schedule_kind, model_device
from .sampling import ddim_invert
from .schedule import NoiseSchedule
from .unet import AttentionBlock, UNet, UNetConfig

# DDIM inversion climbs to this timestep, not to T − 1 (see `Decoder.inversion_schedule`)
INVERSION_T_MAX = 950

__all__ = [
    "SPATIAL_OPTIONS",
    "DecoderConfig",
    "FourierPosition2d",
    "PositionalAttention",
    "add_positional_attention",
    "CaptionEncoder",
    "DecoderNet",
    "Decoder",
]

SPATIAL_OPTIONS = ("none", "attention", "map")


# --------------------------------------------------------------------------------------------
# 1. Configuration
# --------------------------------------------------------------------------------------------


def _default_unet() -> UNetConfig:
    return UNetConfig(image_size=32, base_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                      attention_resolutions=(16,), num_heads=4)


@dataclass(kw_only=True)
class DecoderConfig:
    """A CLIP-embedding-conditioned diffusion decoder (Ramesh et al. 2022, §2.1)."""

    unet: UNetConfig = field(default_factory=_default_unet)  # the denoiser; leave cond_dim, context_dim, low_res_channels unset (the decoder sets them)
    embed_dim: int = 64  # D, size of the CLIP image embedding z_i
    num_image_tokens: int = 4  # context tokens projected from z_i (the paper uses four)
    context_width: int = 128  # width of every context token (image tokens and caption tokens)
    use_text: bool = False  # also condition on the caption's tokens (GLIDE's text path)
    vocab_size: int = 49408  # caption token ids are < vocab_size (open_clip's BPE)
    context_length: int = 32  # caption length in tokens
    text_layers: int = 1  # transformer layers over the caption tokens (0: embeddings only)
    text_heads: int = 4  # attention heads of those layers
    spatial: str = "none"  # "none", "attention" (2-D positions in attention) or "map" (spatial map at the input)
    position_frequencies: int = 8  # "attention": Fourier frequencies per axis of the 2-D positional embedding
    map_channels: int = 4  # "map": channels of the spatial conditioning map
    map_size: int = 8  # "map": side of that map before it is upsampled to the image size
    p_drop_image: float = 0.1  # probability of replacing z_i by the null embedding in training
    p_drop_text: float = 0.5  # probability of replacing the caption by the null tokens in training
    prediction: Prediction = "eps"  # what the U-Net predicts: "eps", "x0" or "v"
    schedule: ScheduleKind = "cosine"  # noise schedule kind (NoiseSchedule.make)
    num_timesteps: int = 1000  # T of the training schedule

    def __post_init__(self) -> None:
        if isinstance(self.unet, Mapping):  # e.g. a config read back from JSON by hand
            self.unet = UNetConfig(**self.unet)
        if not isinstance(self.unet, UNetConfig):
            raise TypeError(f"unet must be a UNetConfig, got {type(self.unet).__name__}")
        if self.unet.cond_dim is not None or self.unet.context_dim is not None or self.unet.low_res_channels:
            raise ValueError("unet.cond_dim, unet.context_dim and unet.low_res_channels are set by the decoder; "
                             "leave them at None, None, 0")
        if self.unet.in_channels != self.unet.out_channels:
            raise ValueError("the decoder predicts one value per input channel: unet.in_channels must equal out_channels")
        for name in ("embed_dim", "num_image_tokens", "context_width", "vocab_size", "context_length",
                     "text_heads", "position_frequencies", "map_channels", "map_size", "num_timesteps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.text_layers, int) or self.text_layers < 0:
            raise ValueError(f"text_layers must be an int >= 0, got {self.text_layers!r}")
        if self.context_width % self.text_heads:
            raise ValueError(f"text_heads={self.text_heads} must divide context_width={self.context_width}")
        if self.spatial not in SPATIAL_OPTIONS:
            raise ValueError(f"spatial must be one of {SPATIAL_OPTIONS}, got {self.spatial!r}")
        for name in ("p_drop_image", "p_drop_text"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        check_prediction(self.prediction)
        check_schedule_kind(self.schedule)

    def unet_config(self) -> UNetConfig:
        """The U-Net's config with the conditioning inputs this decoder feeds it."""
        return dataclasses.replace(
            self.unet,
            cond_dim=self.embed_dim,
            context_dim=self.context_width,
            low_res_channels=self.map_channels if self.spatial == "map" else 0,
        )


# --------------------------------------------------------------------------------------------
# 2. The spatial path: 2-D positions for attention
# --------------------------------------------------------------------------------------------


class FourierPosition2d(nn.Module):
    """A 2-D positional embedding: Fourier features of the pixel centre (y, x) → Linear → C channels.

    With y, x ∈ (−1, 1) and k = 1..F, the features are [sin πky, cos πky, sin πkx, cos πkx]
    (4F of them). This is in the spirit of NeRF's positional encoding (Mildenhall et al. 2020, §5.1,
    Eq. 4) but not the same: NeRF uses frequencies 2^k·π for k = 0..L−1 (octaves), this module
    linearly spaced ones, k·π for k = 1..F. A learned linear map turns them into the C channels of a
    feature map. Works at any resolution.
    """

    def __init__(self, channels: int, num_frequencies: int = 8) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.proj = nn.Linear(4 * num_frequencies, channels)

    def features(self, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        """(H, W, 4F) Fourier features of the pixel centres."""
        k = torch.arange(1, self.num_frequencies + 1, device=device, dtype=torch.float32) * math.pi  # (F,)
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1  # (H,)
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1  # (W,)
        fy = torch.cat([torch.sin(ys[:, None] * k), torch.cos(ys[:, None] * k)], dim=-1)  # (H, 2F)
        fx = torch.cat([torch.sin(xs[:, None] * k), torch.cos(xs[:, None] * k)], dim=-1)  # (W, 2F)
        return torch.cat([fy[:, None, :].expand(-1, width, -1), fx[None, :, :].expand(height, -1, -1)], dim=-1)

    def forward(self, height: int, width: int) -> torch.Tensor:
        """(1, C, H, W) positional embedding on the module's device."""
        pos = self.proj(self.features(height, width, model_device(self)))  # (H, W, C)
        return rearrange(pos, "h w c -> 1 c h w")


class PositionalAttention(nn.Module):
    """An `AttentionBlock` that sees where each image token is.

    ``out = x + Attn(x + p)`` with p the 2-D positional embedding: the block reads x + p (so its
    queries and keys carry position), and p is taken back out of its residual output, so the
    features passed on are x plus the attention's update only.
    """

    def __init__(self, attention: AttentionBlock, channels: int, num_frequencies: int = 8) -> None:
        super().__init__()
        if not isinstance(attention, AttentionBlock):
            raise TypeError(f"attention must be an AttentionBlock, got {type(attention).__name__}")
        self.attention = attention
        self.position = FourierPosition2d(channels, num_frequencies)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.position(x.shape[-2], x.shape[-1]).to(x.dtype)  # (1, C, H, W)
        return self.attention(x + pos, context, context_mask) - pos


def add_positional_attention(unet: UNet, num_frequencies: int = 8) -> int:
    """Wrap every attention block of `unet` in a `PositionalAttention`; return how many were wrapped."""
    count = 0
    for module in list(unet.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, AttentionBlock):
                channels = child.norm.num_channels
                setattr(module, name, PositionalAttention(child, channels, num_frequencies))
                count += 1
    return count


# --------------------------------------------------------------------------------------------
# 3. The caption path (optional)
# --------------------------------------------------------------------------------------------


class CaptionEncoder(nn.Module):
    """Caption token ids (B, L) → token features (B, L, W) and a mask of real tokens (B, L).

    Token + learned position embeddings, then a few pre-norm transformer layers (GLIDE's text
    encoder, Nichol et al. 2022, §2.3, much smaller). Id 0 is padding (open_clip's tokenizer).
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be a long tensor (B, {self.context_length}), got {tokens.dtype} {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        mask = tokens != 0  # (B, L), True = a real token
        h = self.token_embedding(tokens) + self.position_embedding  # (B, L, W)
        pad = ~mask
        pad[:, 0] = False  # a row of only padding would attend to nothing; keep its first slot
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        return self.norm(h), mask


# --------------------------------------------------------------------------------------------
# 4. The network: conditioning → U-Net inputs
# --------------------------------------------------------------------------------------------


def _drop_mask(drop: torch.Tensor | None, batch: int, device: torch.device, name: str) -> torch.Tensor:
    if drop is None:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    if not torch.is_tensor(drop) or drop.dtype != torch.bool or drop.shape != (batch,):
        raise ValueError(f"{name} must be a bool tensor of shape ({batch},), got {getattr(drop, 'dtype', type(drop))} "
                         f"{tuple(getattr(drop, 'shape', ()))}")
    return drop.to(device)


class DecoderNet(nn.Module):
    """ε_θ(x_t, t, z_i, y): the U-Net plus the layers that turn the conditioning into its inputs.

    Called as ``net(x_t, t, image_emb=..., tokens=..., drop_image=..., drop_text=...)`` with
    ``image_emb`` (B, D) already SCALED (`diffusion.scale_embedding`). ``drop_image`` / ``drop_text``
    (B,) bool replace that row's embedding / caption by the learned null embedding / tokens.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config must be a DecoderConfig, got {type(config).__name__}")
        self.config = c = config
        W = c.context_width
        # 1. the U-Net; z_i enters its time embedding through its own `cond` projection
        self.unet = UNet(c.unet_config())
        # 2. learned null embedding (in the scaled space, where coordinates have unit variance)
        self.null_image_emb = nn.Parameter(torch.randn(c.embed_dim))
        # 3. z_i → four context tokens
        self.image_to_tokens = nn.Linear(c.embed_dim, c.num_image_tokens * W)
        # 4. optional caption path with learned null tokens
        self.caption_encoder = None
        if c.use_text:
            self.caption_encoder = CaptionEncoder(c.vocab_size, c.context_length, W, c.text_layers, c.text_heads)
            self.null_text = nn.Parameter(torch.randn(c.context_length, W) * 0.02)
        # 5. optional spatial path
        self.spatial_map = None
        if c.spatial == "attention":
            add_positional_attention(self.unet, c.position_frequencies)
        elif c.spatial == "map":
            self.spatial_map = nn.Linear(c.embed_dim, c.map_channels * c.map_size**2)

    def conditioning(
        self,
        image_emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
        drop_image: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """The U-Net's keyword inputs {cond, context, context_mask, low_res} for this conditioning."""
        c = self.config
        B = image_emb.shape[0]
        if image_emb.dim() != 2 or image_emb.shape[1] != c.embed_dim:
            raise ValueError(f"image_emb must have shape (B, {c.embed_dim}), got {tuple(image_emb.shape)}")
        device = image_emb.device
        drop_image = _drop_mask(drop_image, B, device, "drop_image")
        # 1. z_i, or the null embedding where dropped
        emb = torch.where(drop_image[:, None], self.null_image_emb.to(image_emb.dtype), image_emb)  # (B, D)
        # 2. context: the image tokens, then (optionally) the caption's tokens
        context = rearrange(self.image_to_tokens(emb), "b (n w) -> b n w", n=c.num_image_tokens)  # (B, n, W)
        mask = None
        if self.caption_encoder is not None:
            if tokens is None:
                raise ValueError("this decoder has use_text=True: pass the caption's tokens (B, context_length)")
            drop_text = _drop_mask(drop_text, B, device, "drop_text")
            text, text_mask = self.caption_encoder(tokens.to(device))  # (B, L, W), (B, L)
            text = torch.where(drop_text[:, None, None], self.null_text.to(text.dtype), text)
            text_mask = text_mask | drop_text[:, None]  # null tokens are all real
            context = torch.cat([context, text], dim=1)  # (B, n + L, W)
            mask = torch.cat([text_mask.new_ones(B, c.num_image_tokens), text_mask], dim=1)  # (B, n + L)
        elif tokens is not None or drop_text is not None:
            raise ValueError("tokens/drop_text were given but this decoder has use_text=False")
        # 3. optional spatial map, upsampled to the image size
        low_res = None
        if self.spatial_map is not None:
            s = c.map_size
            low_res = rearrange(self.spatial_map(emb), "b (m h w) -> b m h w", h=s, w=s)  # (B, m, s, s)
            low_res = F.interpolate(low_res, size=(c.unet.image_size,) * 2, mode="bilinear", align_corners=False)
        return {"cond": emb, "context": context, "context_mask": mask, "low_res": low_res}

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        image_emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
        drop_image: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.unet(x_t, t, **self.conditioning(image_emb, tokens, drop_image, drop_text))


# --------------------------------------------------------------------------------------------
# 5. The decoder: loss with condition dropout, guided sampling
# --------------------------------------------------------------------------------------------


class Decoder(Denoiser):
    """The unCLIP decoder: a `Denoiser` whose net is a `DecoderNet`.

    ``loss(batch)`` takes ``"image"`` (B, 3, S, S) in [-1, 1], ``"image_emb"`` (B, D) (unit-norm
    CLIP image embeddings) and, with ``use_text``, ``"tokens"`` (B, L). ``sample(image_emb)``
    draws images from embeddings with classifier-free guidance.
    """

    def __init__(self, config: DecoderConfig) -> None:
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config must be a DecoderConfig, got {type(config).__name__}")
        keys = ("image_emb", "drop_image") + (("tokens", "drop_text") if config.use_text else ())
        super().__init__(DecoderNet(config), NoiseSchedule.make(config.schedule, config.num_timesteps),
                         prediction=config.prediction, image_key="image", cond_keys=keys)
        self.config = config

    def draw_dropout(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"drop_image": (B,) bool, "drop_text": (B,) bool}, each True with p_drop_image / p_drop_text."""
        device = generator.device if generator is not None else self.device
        drop_image = torch.rand(batch_size, generator=generator, device=device) < self.config.p_drop_image
        drop_text = torch.rand(batch_size, generator=generator, device=device) < self.config.p_drop_text
        return {"drop_image": drop_image.to(self.device), "drop_text": drop_text.to(self.device)}

    def model_kwargs(self, image_emb: torch.Tensor, tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The conditional keyword arguments of the net for unit-norm embeddings (nothing dropped)."""
        image_emb = check_embeddings("image_emb", image_emb, self.config.embed_dim)
        B = image_emb.shape[0]
        kwargs = {"image_emb": scale_embedding(image_emb.to(self.device, torch.float32)),
                  "drop_image": torch.zeros(B, dtype=torch.bool, device=self.device)}
        if self.config.use_text:
            if tokens is None:
                raise ValueError("this decoder has use_text=True: pass tokens (B, context_length)")
            if tokens.shape[0] != B:
                raise ValueError(f"tokens has batch {tokens.shape[0]}, image_emb has batch {B}")
            kwargs["tokens"] = tokens.to(self.device)
            kwargs["drop_text"] = torch.zeros(B, dtype=torch.bool, device=self.device)
        elif tokens is not None:
            raise ValueError("tokens were given but this decoder has use_text=False")
        return kwargs

    def null_kwargs(self) -> dict[str, torch.Tensor]:
        """The unconditional half for `sampling.guided`: embedding (and caption) dropped."""
        null = {"drop_image": torch.ones(1, dtype=torch.bool, device=self.device)}
        if self.config.use_text:
            null["drop_text"] = torch.ones(1, dtype=torch.bool, device=self.device)
        return null

    def loss(self, batch: Mapping[str, object], *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The `Denoiser` loss (Ho et al. 2020, Eq. 14) with conditions dropped for guidance.

        1. scale z_i by sqrt(D); 2. draw which rows lose z_i (p_drop_image) and the caption
        (p_drop_text); 3. t ~ U{0..T−1}, ε ~ N(0, I), x_t = q_sample(x₀, t, ε), MSE on the target.
        """
        for key in ("image", "image_emb") + (("tokens",) if self.config.use_text else ()):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} entry; keys: {sorted(batch)}")
        image = batch["image"]
        image_emb = check_embeddings("batch['image_emb']", batch["image_emb"], self.config.embed_dim)
        if not torch.is_tensor(image) or image.dim() != 4 or image.shape[0] != image_emb.shape[0]:
            raise ValueError("batch['image'] must be (B, C, H, W) with the batch size of batch['image_emb']")
        inner = {"image": image.to(self.device),
                 "image_emb": scale_embedding(image_emb.to(self.device, torch.float32))}
        drops = self.draw_dropout(image.shape[0], generator)
        inner["drop_image"] = drops["drop_image"]
        if self.config.use_text:
            inner["tokens"] = batch["tokens"].to(self.device)
            inner["drop_text"] = drops["drop_text"]
        return super().loss(inner, generator=generator)

    @torch.no_grad()
    def sample(
        self,
        image_emb: torch.Tensor,
        *,
        tokens: torch.Tensor | None = None,
        steps: int = 50,
        guidance_scale: float | None = 3.0,
        generator: torch.Generator | None = None,
        sampler: str = "ddim",
        eta: float = 0.0,
        sampler_options: Mapping[str, object] | None = None,
        x_T: torch.Tensor | None = None,
        inverted: bool = False,
        callback: Callable[..., None] | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw one image per embedding (B, C, S, S) in [-1, 1].

        `image_emb` (B, D) are unit-norm CLIP image embeddings (from CLIP or the prior).
        Runs ``sampling.SAMPLERS[sampler]`` ("ddim", "ddpm", "euler", "heun", "dpmpp_2m") on `steps`
        levels of the training schedule (`Denoiser.sample_loop`); `eta` is DDIM's, other options
        (Euler's and Heun's ``churn``) go in `sampler_options`.
        ``guidance_scale`` None samples the conditional model alone; a number s wraps it in
        `sampling.guided` (0: unconditional, 1: conditional, > 1: more faithful, less diverse).
        `x_T` (B, C, S, S) replaces the starting noise; ``inverted=True`` says it came from
        `invert` with the same `steps`, and samples on the inversion's schedule (which stops at
        t = `INVERSION_T_MAX`) so that the pair reconstructs the image.
        """
        if inverted and x_T is None:
            raise ValueError("inverted=True needs the x_T that invert() returned")
        cond = self.model_kwargs(image_emb, tokens)
        u = self.config.unet
        shape = (image_emb.shape[0], u.in_channels, u.image_size, u.image_size)
        # the inversion's own levels, walked as they are (steps None), or `steps` levels of the training schedule
        schedule = self.inversion_schedule(steps).to(self.device) if inverted else None
        return self.sample_loop(shape, cond, steps=None if inverted else steps, sampler=sampler, eta=eta,
                                sampler_options=sampler_options, guidance_scale=guidance_scale,
                                null_kwargs=self.null_kwargs(), schedule=schedule, x_T=x_T, clip_x0=True,
                                generator=generator, callback=callback, progress=progress)

    @torch.no_grad()
    def inversion_schedule(self, steps: int) -> NoiseSchedule:
        """`steps` timesteps evenly spaced from 0 to `INVERSION_T_MAX` (not to T − 1).

        The cosine schedule's last level has ᾱ ≈ 2e-9: sampling back from it multiplies any
        error of the inversion's ε̂ by 1/√ᾱ ≈ 2·10⁴, and the reconstruction comes back as
        coloured noise. Stopping at t = 950 (ᾱ ≈ 6e-3, a factor of about 13) keeps it an image.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an int >= 2, got {steps!r}")
        t_max = min(INVERSION_T_MAX, self.schedule.num_timesteps - 1)
        if steps > t_max + 1:  # more would repeat timesteps (and a huge count would loop for hours)
            raise ValueError(f"steps must be at most {t_max + 1} (the distinct timesteps 0 … {t_max}), got {steps}")
        kept = sorted({round(i * t_max / (steps - 1)) for i in range(steps)})
        return self.schedule.respace(kept)

    def invert(self, images: torch.Tensor, image_emb: torch.Tensor, *, tokens: torch.Tensor | None = None,
               steps: int = 50) -> torch.Tensor:
        """DDIM-invert real images to the x_T that ``sample(..., x_T=x_T, inverted=True,
        guidance_scale=None)`` with the same `steps` maps back to them (Ramesh et al. 2022, §3.1,
        the "bipartite latent" (z_i, x_T) of an image). Runs on `inversion_schedule(steps)`."""
        u = self.config.unet
        if images.dim() != 4 or tuple(images.shape[1:]) != (u.in_channels, u.image_size, u.image_size):
            raise ValueError(f"images must be (B, {u.in_channels}, {u.image_size}, {u.image_size}), got {tuple(images.shape)}")
        return ddim_invert(self, images.to(self.device), self.inversion_schedule(steps).to(self.device),
                           model_kwargs=self.model_kwargs(image_emb, tokens), prediction=self.prediction)
