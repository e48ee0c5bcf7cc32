"""Measuring a text-to-image model: does the picture show what the prompt asked for?

Three measures, from the most exact to the most general:

* **caption accuracy** (shapes only) — the shapes world has an attribute reader
  (`data.reader`) that recovers shape, colour, size and position from any image without
  learning. A generated image is right when the reader finds every attribute the prompt
  stated. `prompt_set` fixes the prompts: one-object captions whose (colour, shape) pair was
  seen in training, or one of the `HELDOUT_COMBINATIONS` the model never saw (compositional
  generalisation, the question unCLIP's §7 asks of attribute binding).
* **CLIP score** — the mean cosine between each image's and its caption's CLIP embedding, × 100
  and floored at 0 (Hessel et al. 2021, "CLIPScore", Eq. 1 with w = 100 as torchmetrics'
  `CLIPScore` does). Needs no labels, but inherits CLIP's blind spots.
* **R-precision** — for each image, rank its own caption among `num_distractors` other captions
  by CLIP similarity; the share ranked first (Xu et al. 2018, "AttnGAN", §4.1, R = 1 with 99
  mismatched captions).

The CLIP used to score should not be the one the generator was trained with, or the model is
graded by its own teacher; in this course we only have one small CLIP per dataset, so CLIP
score and R-precision here are diagnostics and caption accuracy is the headline number.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.attributes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, caption
from .data.reader import score_captions
from .data.shapes import HELDOUT_COMBINATIONS

__all__ = [
    "KINDS",
    "prompt_set",
    "attribute_scores",
    "caption_accuracy",
    "evaluate_captions",
    "clip_score",
    "r_precision",
]

KINDS: tuple[str, ...] = ("seen", "heldout")


class _Generator(Protocol):
    """Anything with `UnCLIP.generate`'s call: prompts → images (N, 3, S, S) in [-1, 1]."""

    def generate(self, prompts: Sequence[str], *, n_per_prompt: int, seed: int, **kwargs: Any) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# 1. Fixed prompt sets
# --------------------------------------------------------------------------------------------


def _combinations(kind: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs of a kind: "seen" = in the train split, "heldout" = never in it."""
    if kind == "heldout":
        return list(HELDOUT_COMBINATIONS)
    if kind == "seen":
        return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_COMBINATIONS]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def prompt_set(kind: str = "seen", n: int = 54, seed: int = 0) -> list[str]:
    """`n` distinct one-object prompts that state all four attributes, a pure function of (kind, n, seed).

    Every (colour, shape) pair of the kind × size × position gives one caption in the first
    template ("a small red circle at the top left"): 270 seen, 54 held out. A seeded
    permutation picks `n` of them, so the set is fixed for a given seed.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    everything = [
        caption(Scene((ShapeObject(shape, colour, size, position),)), template=0)
        for colour, shape in _combinations(kind) for size in SIZES for position in POSITIONS
    ]
    if n > len(everything):
        raise ValueError(f"kind {kind!r} has only {len(everything)} distinct prompts; asked for n={n}")
    order = np.random.default_rng(seed).permutation(len(everything))
    return [everything[i] for i in order[:n]]


# --------------------------------------------------------------------------------------------
# 2. Caption accuracy (shapes)
# --------------------------------------------------------------------------------------------


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of str")
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("every prompt must be a str")
    return list(prompts)


@torch.no_grad()
def attribute_scores(
    pipeline: _Generator,
    prompts: Sequence[str],
    *,
    n_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 64,
    **generate_kwargs: Any,
) -> dict[str, float]:
    """Generate `n_per_prompt` images per shapes prompt and read them back.

    Returns the share of images right for each attribute the prompts state ("shape", "colour",
    "size", "position"; "relation" for two-object relation prompts), "all" (every stated
    attribute right: the caption accuracy), "count" (exactly as many objects as stated) and
    "n" (images scored). Prompts go to ``pipeline.generate`` `batch_size` at a time; batch k
    uses seed ``seed + 1_000_003·k`` so the result does not depend on anything else.
    """
    prompts = _check_prompts(prompts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    images, rows = [], []
    for k, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[start:start + batch_size]
        out = pipeline.generate(chunk, n_per_prompt=n_per_prompt, seed=seed + 1_000_003 * k, **generate_kwargs)
        if not torch.is_tensor(out) or out.dim() != 4 or out.shape[0] != len(chunk) * n_per_prompt:
            raise ValueError(f"pipeline.generate must return (len(prompts)·n_per_prompt, 3, S, S) images, "
                             f"got {getattr(out, 'shape', type(out))}")
        images.append(out.float().cpu())
        rows += [p for p in chunk for _ in range(n_per_prompt)]
    scores: dict[str, float] = score_captions(torch.cat(images), rows)
    scores["n"] = len(rows)
    return scores


def caption_accuracy(
    pipeline: _Generator, prompts: Sequence[str], *, n_per_prompt: int = 1, seed: int = 0, **generate_kwargs: Any
) -> float:
    """The share of generated images in which the attribute reader finds every attribute the prompt asked for."""
    return attribute_scores(pipeline, prompts, n_per_prompt=n_per_prompt, seed=seed, **generate_kwargs)["all"]


def evaluate_captions(
    pipeline: _Generator, *, n: int = 54, n_per_prompt: int = 1, seed: int = 0, **generate_kwargs: Any
) -> dict[str, Any]:
    """Caption accuracy on `n` seen and `n` held-out prompts (`prompt_set`), overall and per attribute.

    Returns {"seen": float, "heldout": float, "per_attribute": {"seen": {...}, "heldout": {...}},
    "n": prompts per kind, "n_per_prompt": int, "seed": int}. `generate_kwargs` (guidance
    scales, steps, ``use_prior``...) go to ``pipeline.generate``.
    """
    out: dict[str, Any] = {"per_attribute": {}}
    for kind in KINDS:
        scores = attribute_scores(pipeline, prompt_set(kind, n, seed), n_per_prompt=n_per_prompt, seed=seed,
                                  **generate_kwargs)
        out[kind] = scores["all"]
        out["per_attribute"][kind] = {k: v for k, v in scores.items() if k not in ("all", "n")}
    out.update(n=n, n_per_prompt=n_per_prompt, seed=seed)
    return out


# --------------------------------------------------------------------------------------------
# 3. CLIP score and R-precision
# --------------------------------------------------------------------------------------------


def _check_pairs(images: torch.Tensor, captions: Sequence[str]) -> list[str]:
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [-1, 1], got {getattr(images, 'shape', type(images))}")
    captions = _check_prompts(captions)
    if len(captions) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(captions)} captions")
    return captions


@torch.no_grad()
def clip_score(clip: Any, images: torch.Tensor, captions: Sequence[str]) -> float:
    """Mean over pairs of max(100 · cos(E_I(image), E_T(caption)), 0) (Hessel et al. 2021, Eq. 1, w = 100)."""
    captions = _check_pairs(images, captions)
    image_emb = F.normalize(clip.encode_image(images).float(), dim=-1)  # (B, D)
    text_emb = F.normalize(clip.encode_text(captions).float(), dim=-1)  # (B, D)
    cos = (image_emb * text_emb.to(image_emb.device)).sum(-1)  # (B,)
    return float((100 * cos).clamp(min=0).mean())


@torch.no_grad()
def r_precision(
    clip: Any,
    images: torch.Tensor,
    captions: Sequence[str],
    *,
    candidates: Sequence[str] | None = None,
    num_distractors: int = 99,
    seed: int = 0,
) -> float:
    """R-precision (R = 1): the share of images whose own caption out-scores every distractor.

    For image i the distractors are `num_distractors` captions drawn (seeded, without
    replacement) from `candidates` (default: the distinct `captions`) that differ from
    caption i; fewer are used when fewer exist. A tie counts as a miss. Chance is about
    1 / (1 + number of distractors).
    """
    captions = _check_pairs(images, captions)
    if isinstance(num_distractors, bool) or not isinstance(num_distractors, int) or num_distractors < 1:
        raise ValueError(f"num_distractors must be a positive int, got {num_distractors!r}")
    pool = sorted(set(candidates if candidates is not None else captions))
    texts = sorted(set(pool) | set(captions))
    index = {t: j for j, t in enumerate(texts)}
    text_emb = F.normalize(clip.encode_text(texts).float(), dim=-1)  # (T, D)
    image_emb = F.normalize(clip.encode_image(images).float(), dim=-1).to(text_emb.device)  # (B, D)
    sim = image_emb @ text_emb.T  # (B, T)
    rng = np.random.default_rng(seed)
    hits = 0
    for i, own in enumerate(captions):
        others = [index[t] for t in pool if t != own]
        if not others:
            raise ValueError("r_precision needs at least one candidate caption that differs from each image's own")
        picked = rng.choice(others, size=min(num_distractors, len(others)), replace=False)
        hits += bool(sim[i, index[own]] > sim[i, torch.as_tensor(picked)].max())
    return hits / len(captions)
