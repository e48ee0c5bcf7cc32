"""The diffusion prior: from a caption's CLIP text embedding to a plausible CLIP image embedding.

unCLIP (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents")
generates in two stages: a *prior* P(z_i | y) that produces a CLIP image embedding z_i from a
caption y, then a decoder that draws an image from z_i. Why a prior at all? CLIP's text and
image embeddings of a matching pair are different vectors (a matched pair's cosine is below 1,
and its value is a property of the trained CLIP: measure it), so handing the decoder z_t instead
of z_i gives it inputs unlike the image embeddings it was trained on.

The prior here is the paper's diffusion prior (§2.2 and Appendix C):

* a decoder-only (causal) Transformer over the sequence, in this order,

      [caption tokens (L) | text embedding z_t | timestep t | noised image embedding z_i^(t) | query]

  whose output at the final learned query token is the prediction;
* it predicts the CLEAN embedding x₀ = z_i directly (not the noise ε) and is trained with
  L = E ‖ f_θ(z_i^(t), t, y) − z_i ‖²  (Ramesh et al. 2022, §2.2, the equation after "we train");
* text conditioning is dropped 10% of the time, replaced by learned null embeddings, so
  classifier-free guidance (Ho & Salimans 2022) works at sampling time (Ramesh et al. 2022, §2.2);
* at sampling time the paper draws two samples and keeps the one with the larger dot product
  with z_t (§2.2); `sample_best_of` does this for any n, but ranks by COSINE (`rerank`): our
  candidates are not unit vectors (the prior samples scaled embeddings) and the decoder uses only
  their direction, so their length should not decide. For unit vectors the two rankings agree.

The caption tokens are embedded by a small learned token embedding (the paper feeds the CLIP
text encoder's per-token features; our tiny CLIP gives the pooled embedding, which the prior
sees as z_t anyway). ``PriorConfig(use_tokens=False)`` leaves them out: the sequence is then
[z_t | t | x_t | query], nine times shorter than with 32 tokens, which is what makes a CPU run
of a few minutes possible; z_t already summarises the caption.

**Embedding scale.** CLIP embeddings are unit vectors, so each of their D coordinates has a
variance of about 1/D, far smaller than the unit-variance noise a diffusion model adds. The prior
multiplies them by sqrt(D) before diffusion and divides its samples by sqrt(D)
(`diffusion.scale_embedding` / `diffusion.unscale_embedding`, the one rule of the course, which
the decoder applies to the embeddings it is conditioned on too).

Code names ↔ paper symbols: ``text_emb`` = z_t, ``image_emb`` = z_i (the x₀ of the diffusion),
``x_t`` = z_i^(t), ``tokens`` = the caption y as token ids.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .checkpoints import load_checkpoint, save_checkpoint
from .diffusion import Denoiser, check_embeddings, scale_embedding, unscale_embedding
from .options import ScheduleKind, check_schedule_kind
from .schedule import NoiseSchedule
from .unet import timestep_embedding

__all__ = [
    "PriorConfig",
    "causal_mask",
    "CausalSelfAttention",
    "Block",
    "PriorTransformer",
    "DiffusionPrior",
    "rerank",
    "save_prior",
    "load_prior",
]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PriorConfig:
    """Shape and training options of a diffusion prior. Defaults: a CPU-sized prior for a 64-d CLIP."""

    embed_dim: int = 64  # D, the size of the CLIP embeddings (text and image)
    width: int = 128  # transformer width (size of each token's vector)
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads per block; must divide width
    mlp_ratio: int = 4  # hidden size of each block's MLP = mlp_ratio · width
    dropout: float = 0.0  # dropout on attention outputs and MLP outputs during training
    use_tokens: bool = True  # feed the caption tokens too (the paper); False: [z_t, t, x_t, query], tokens ignored
    context_length: int = 32  # L, caption tokens per caption (as made by data.tokens.tokenize)
    vocab_size: int = 49408  # token ids are < vocab_size (49408: open_clip's BPE tokenizer)
    num_timesteps: int = 1000  # T of the training schedule (the paper's prior: 1000)
    schedule: ScheduleKind = "cosine"  # noise schedule kind: "cosine" (the paper's prior) or "linear"
    p_uncond_text: float = 0.1  # probability of dropping the text condition in training (§2.2: 10%)

    def __post_init__(self) -> None:
        ints = ("embed_dim", "width", "depth", "heads", "mlp_ratio", "context_length", "vocab_size", "num_timesteps")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.use_tokens, bool):
            raise TypeError(f"use_tokens must be a bool, got {self.use_tokens!r}")
        if self.width % self.heads:
            raise ValueError(f"heads={self.heads} must divide width={self.width}")
        if self.width % 2:
            raise ValueError(f"width must be even (sinusoidal timestep embedding), got {self.width}")
        check_schedule_kind(self.schedule)
        if not 0.0 <= float(self.p_uncond_text) <= 1.0:
            raise ValueError(f"p_uncond_text must lie in [0, 1], got {self.p_uncond_text!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    @property
    def num_token_slots(self) -> int:
        """Positions taken by caption tokens: L, or 0 without tokens."""
        return self.context_length if self.use_tokens else 0

    @property
    def sequence_length(self) -> int:
        """Caption tokens + text embedding + timestep + noised image embedding + query."""
        return self.num_token_slots + 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The causal transformer
# ---------------------------------------------------------------------------------------------


def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, n) bool, True where query i may attend to key j, i.e. j ≤ i (nothing sees the future)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position i only attends to positions ≤ i (Vaswani et al. 2017)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # each token's vector is [q | k | v], each split into `heads` pieces of d = width / heads
        q, k, v = rearrange(self.qkv(h), "b n (three heads d) -> three b heads n d", three=3, heads=self.heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)  # (B, heads, N, d)
        return self.proj(rearrange(out, "b heads n d -> b n (heads d)"))  # (B, N, width)


class Block(nn.Module):
    """Pre-norm transformer block: h + attn(LN(h)), then h + MLP(LN(h)) (GPT-2 layout)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln_1(h))
        return h + self.mlp(self.ln_2(h))


class PriorTransformer(nn.Module):
    """f_θ(x_t, t, y): the causal transformer of the diffusion prior (Ramesh et al. 2022, §2.2).

    Called as ``net(x_t, t, text_emb=..., tokens=..., drop_text=...)``; every embedding is in
    the scaled diffusion space (`scale_embedding`). Returns the predicted clean embedding x̂₀ (B, D).
    ``drop_text`` (B,) bool replaces that row's text embedding and caption tokens by the learned
    null embeddings (the unconditional model of classifier-free guidance).
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # inputs → tokens of width c.width
        self.token_embedding = nn.Embedding(c.vocab_size, c.width) if c.use_tokens else None
        self.text_proj = nn.Linear(c.embed_dim, c.width)
        self.time_mlp = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.x_proj = nn.Linear(c.embed_dim, c.width)
        self.query = nn.Parameter(torch.randn(c.width) * 0.02)  # the learned final query token
        self.position = nn.Parameter(torch.randn(c.sequence_length, c.width) * 0.02)
        # learned null condition (classifier-free guidance): one text vector, one vector per token slot
        self.null_text = nn.Parameter(torch.randn(c.width) * 0.02)
        self.null_tokens = nn.Parameter(torch.randn(c.context_length, c.width) * 0.02) if c.use_tokens else None
        # the transformer and its read-out at the query position
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.ln_f = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.embed_dim)

    @staticmethod
    def sequence_names(config: PriorConfig) -> list[str]:
        """The name of each position of the input sequence, in order."""
        return [f"token_{i}" for i in range(config.num_token_slots)] + ["text_emb", "time", "x_t", "query"]

    def _check(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor, tokens: torch.Tensor | None) -> None:
        c = self.config
        B = x_t.shape[0]
        if x_t.dim() != 2 or x_t.shape[1] != c.embed_dim:
            raise ValueError(f"x_t must have shape (B, {c.embed_dim}), got {tuple(x_t.shape)}")
        if not torch.is_tensor(t) or t.shape != (B,) or t.is_floating_point():
            raise ValueError(f"t must be an integer tensor of shape ({B},), got {getattr(t, 'shape', t)}")
        if text_emb.shape != (B, c.embed_dim):
            raise ValueError(f"text_emb must have shape ({B}, {c.embed_dim}), got {tuple(text_emb.shape)}")
        if not c.use_tokens:
            return  # tokens, if given, are not read
        if tokens is None:
            raise ValueError(f"this prior reads caption tokens: pass tokens of shape ({B}, {c.context_length})")
        if tokens.shape != (B, c.context_length) or tokens.is_floating_point():
            raise ValueError(f"tokens must be integer ids of shape ({B}, {c.context_length}), got {tuple(tokens.shape)} {tokens.dtype}")

    def embed_sequence(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        text_emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The input sequence (B, L + 4, width), laid out as `sequence_names`, before the blocks."""
        self._check(x_t, t, text_emb, tokens)
        B = x_t.shape[0]
        # 1. one vector per input (no token slots when use_tokens is False: L = 0)
        W = self.config.width
        if self.token_embedding is not None:
            h_tokens = self.token_embedding(tokens)  # (B, L, W)
        else:
            h_tokens = x_t.new_zeros(B, 0, W)  # no token slots: L = 0
        h_text = self.text_proj(text_emb)  # (B, W)
        h_time = self.time_mlp(timestep_embedding(t, self.config.width))  # (B, W)
        h_x = self.x_proj(x_t)  # (B, W)
        h_query = self.query.expand(B, -1)  # (B, W)
        # 2. condition dropout: swap in the learned null text and null tokens where drop_text
        if drop_text is not None:
            if drop_text.shape != (B,) or drop_text.dtype != torch.bool:
                raise ValueError(f"drop_text must be a bool tensor of shape ({B},), got {tuple(drop_text.shape)} {drop_text.dtype}")
            drop = drop_text.to(x_t.device)
            h_text = torch.where(drop[:, None], self.null_text.expand(B, -1), h_text)
            if self.null_tokens is not None:
                h_tokens = torch.where(drop[:, None, None], self.null_tokens.expand(B, -1, -1), h_tokens)
        # 3. the sequence, in order, plus learned positions
        singles = torch.stack([h_text, h_time, h_x, h_query], dim=1)  # (B, 4, W)
        return torch.cat([h_tokens, singles], dim=1) + self.position  # (B, L + 4, W)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        *,
        text_emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.embed_sequence(x_t, t, text_emb=text_emb, tokens=tokens, drop_text=drop_text)
        for block in self.blocks:
            h = block(h)  # (B, L + 4, W)
        return self.out(self.ln_f(h[:, -1]))  # the query position → x̂₀, (B, D)


# ---------------------------------------------------------------------------------------------
# The prior: transformer + schedule + loss + sampling
# ---------------------------------------------------------------------------------------------


class DiffusionPrior(Denoiser):
    """The unCLIP diffusion prior: a `Denoiser` that predicts x₀ = scaled z_i with a `PriorTransformer`.

    ``loss(batch)`` takes a batch with ``"text_emb"`` (B, D), ``"image_emb"`` (B, D) (unit-norm
    CLIP embeddings) and ``"tokens"`` (B, L); ``sample`` / ``sample_best_of`` return image
    embeddings on CLIP's scale (unscaled, not re-normalised).
    """

    def __init__(self, config: PriorConfig) -> None:
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        super().__init__(
            PriorTransformer(config),
            NoiseSchedule.make(config.schedule, config.num_timesteps),
            prediction="x0",
            image_key="x0",
            cond_keys=("text_emb", "tokens", "drop_text"),
        )
        self.config = config

    def draw_text_dropout(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) bool: which rows lose their text condition, each with probability p_uncond_text."""
        device = generator.device if generator is not None else self.device
        return torch.rand(batch_size, generator=generator, device=device) < self.config.p_uncond_text

    def loss(self, batch: Mapping[str, object], *, generator: torch.Generator | None = None) -> torch.Tensor:
        """‖f_θ(z_i^(t), t, y) − z_i‖² (Ramesh et al. 2022, §2.2), text dropped with p_uncond_text.

        1. scale both embeddings by sqrt(D); 2. draw the dropout mask; 3. the `Denoiser` loss
        (t ~ U{0..T−1}, ε ~ N(0, I), x_t = q_sample(x₀, t, ε), MSE against x₀).
        """
        for key in ("text_emb", "image_emb") + (("tokens",) if self.config.use_tokens else ()):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} entry; keys: {sorted(batch)}")
        D = self.config.embed_dim
        text_emb = check_embeddings("batch['text_emb']", batch["text_emb"], D)
        image_emb = check_embeddings("batch['image_emb']", batch["image_emb"], D)
        if image_emb.shape[0] != text_emb.shape[0]:
            raise ValueError("batch['text_emb'] and batch['image_emb'] have different batch sizes")
        device = self.device
        inner = {
            "x0": scale_embedding(image_emb.to(device)),
            "text_emb": scale_embedding(text_emb.to(device)),
            "tokens": batch["tokens"].to(device) if self.config.use_tokens else None,
            "drop_text": self.draw_text_dropout(text_emb.shape[0], generator).to(device),
        }
        return super().loss(inner, generator=generator)

    @torch.no_grad()
    def sample(
        self,
        text_emb: torch.Tensor,
        tokens: torch.Tensor | None = None,
        *,
        steps: int = 64,
        guidance_scale: float | None = None,
        sampler: str = "ddim",
        eta: float = 0.0,
        sampler_options: Mapping[str, object] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw one image embedding per caption (B, D), on CLIP's scale.

        Runs ``sampling.SAMPLERS[sampler]`` through `Denoiser.sample_loop` (`eta` is DDIM's; other
        options in `sampler_options`) on `steps` levels of the training schedule
        (the paper samples its prior in 64 steps), with x₀ prediction and no clipping (the
        scaled embeddings are not bounded by 1). ``guidance_scale`` None samples the plain
        conditional model; a number wraps it with `sampling.guided`, whose unconditional half
        sets ``drop_text`` (1: conditional, 0: unconditional, > 1: stronger text adherence).
        """
        text_emb = check_embeddings("text_emb", text_emb, self.config.embed_dim)
        device = self.device
        B = text_emb.shape[0]
        cond = {
            "text_emb": scale_embedding(text_emb.to(device)),
            "tokens": tokens.to(device) if (tokens is not None and self.config.use_tokens) else None,
            "drop_text": torch.zeros(B, dtype=torch.bool, device=device),
        }
        null = {"drop_text": torch.ones(1, dtype=torch.bool, device=device)}  # the guided model's unconditional half
        x0 = self.sample_loop((B, self.config.embed_dim), cond, steps=steps, sampler=sampler, eta=eta,
                              sampler_options=sampler_options, guidance_scale=guidance_scale, null_kwargs=null,
                              clip_x0=False, generator=generator)
        return unscale_embedding(x0)

    @torch.no_grad()
    def sample_best_of(
        self, text_emb: torch.Tensor, tokens: torch.Tensor | None = None, *, n: int = 2, **sample_kwargs: Any
    ) -> torch.Tensor:
        """Draw `n` samples per caption and keep the one most similar to the text embedding (§2.2, n = 2).

        The n·B samples are drawn in one batch (caption b's candidates are rows b·n … b·n + n − 1);
        `sample_kwargs` go to `sample`. Returns (B, D).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        rep_tokens = None if tokens is None else tokens.repeat_interleave(n, dim=0)
        candidates = self.sample(text_emb.repeat_interleave(n, dim=0), rep_tokens, **sample_kwargs)  # (B·n, D)
        best, _ = rerank(rearrange(candidates, "(b n) d -> b n d", n=n), text_emb.to(candidates.device))
        return best


def rerank(candidates: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, for each caption, the candidate with the highest cosine similarity to its text embedding.

    candidates (B, n, D), text_emb (B, D) → (best (B, D), index (B,)).
    """
    if candidates.dim() != 3 or text_emb.dim() != 2 or candidates.shape[::2] != text_emb.shape:
        raise ValueError(f"need candidates (B, n, D) and text_emb (B, D), got {tuple(candidates.shape)} and {tuple(text_emb.shape)}")
    scores = F.cosine_similarity(candidates, text_emb[:, None, :], dim=-1)  # (B, n)
    index = scores.argmax(dim=1)  # (B,)
    best = candidates[torch.arange(candidates.shape[0], device=candidates.device), index]  # (B, D)
    return best, index


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def save_prior(path: str | Path, prior: DiffusionPrior, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path.safetensors`` + ``path.json`` (the `PriorConfig` and `extra`); returns the stem."""
    if not isinstance(prior, DiffusionPrior):
        raise TypeError(f"prior must be a DiffusionPrior, got {type(prior).__name__}")
    return save_checkpoint(path, prior, prior.config, extra=extra)


def load_prior(path: str | Path, device: torch.device | str = "cpu") -> DiffusionPrior:
    """Load a prior saved by `save_prior`, in eval mode (tensor names and shapes are checked)."""
    return load_checkpoint(path, DiffusionPrior, config_cls=PriorConfig, device=device).eval()
