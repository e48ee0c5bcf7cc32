"""Measuring a text-to-image model: does the picture show what the prompt asked for?

Four measures, from the most exact to the most general:

* **clean share** — the share of pictures whose background, away from the objects, is as flat
  as the data's (`background_roughness`, `is_clean`, `clean_share`). The shapes world draws
  every object on one flat colour; a sampler that stops too early or adds too little noise
  leaves speckle and blotches there, which caption accuracy (whose reader is built to ignore
  them) does not see. The threshold `CLEAN_THRESHOLD` is chosen on the dataset's own renders
  (`calibrate_clean_threshold`): clean ones, and ones corrupted by `data.shapes.render_corrupted`.

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

from ..data.attributes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, caption
from ..data.reader import _dilate, estimate_background, label_components, score_captions
from ..data.shapes import HELDOUT_COMBINATIONS

__all__ = [
    "CLEAN_THRESHOLD",
    "background_roughness",
    "is_clean",
    "clean_share",
    "calibrate_clean_threshold",
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
# 0. Clean pictures: is the background as flat as the data's?
# --------------------------------------------------------------------------------------------

#: `background_roughness` above this is "not clean". Chosen by `calibrate_clean_threshold()` on
#: 150 scenes rendered clean, soft and corrupted at 32×32 and 64×64 (the midpoint between the
#: clean and soft renders' 99th percentile and the corrupted ones' 1st percentile: 0.049 and
#: 0.120); tests/test_evaluation_captions.py recomputes it.
CLEAN_THRESHOLD: float = 0.085

_OBJECT_DISTANCE = 0.5  # RGB distance from the background that marks object pixels (as the reader)
_MIN_OBJECT_SHARE = 0.01  # components smaller than this share of the picture are specks, not objects


def _roughness_one(image: np.ndarray) -> float:
    """99th percentile of the background pixels' RGB distance to the fitted background plane."""
    img = np.asarray(image, dtype=np.float64).transpose(1, 2, 0)  # (H, W, 3)
    h, w, _ = img.shape
    background = estimate_background(img)  # (H, W, 3), a plane per channel fitted to the border
    distance = np.linalg.norm(img - background, axis=-1)  # (H, W)
    labels, count = label_components(distance > _OBJECT_DISTANCE)
    objects = np.zeros((h, w), dtype=bool)
    for j in range(1, count + 1):
        part = labels == j
        if part.sum() >= _MIN_OBJECT_SHARE * h * w:  # an object, not a speck
            objects |= part
    away = ~_dilate(objects, max(2, round(h / 16)))  # background, a margin away from every object
    if away.sum() < 0.1 * h * w:
        return float(np.percentile(distance, 99))  # almost no background left: judge the whole picture
    return float(np.percentile(distance[away], 99))


def background_roughness(images: torch.Tensor) -> torch.Tensor:
    """How far the background strays from flat, per picture: (N,) for images (N, 3, H, W) in [-1, 1].

    1. fit the background as a plane per channel to the border pixels (`data.reader.estimate_background`,
       robust to objects touching the border; a drifting or graded background stays "flat");
    2. objects are the connected regions farther than 0.5 (RGB distance) from it and larger
       than 1% of the picture; specks and blotches smaller than that count as background;
    3. grow the objects by H/16 pixels (at least 2) so their soft edges are left out;
    4. the roughness is the 99th percentile of the remaining pixels' distance to the plane.

    A render of the dataset scores 0 (up to 8-bit rounding); a few speckled pixels or one
    blotch raise the 99th percentile.
    """
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] < 16:
        raise ValueError(f"images must be a (N, 3, H, W) tensor in [-1, 1] with H >= 16, "
                         f"got {getattr(images, 'shape', type(images))}")
    arr = images.detach().float().cpu().clamp(-1, 1).numpy()
    return torch.tensor([_roughness_one(a) for a in arr], dtype=torch.float32)


def is_clean(images: torch.Tensor, threshold: float = CLEAN_THRESHOLD) -> torch.Tensor:
    """(N,) bool: the picture's background is as flat as the data's (`background_roughness` ≤ threshold)."""
    return background_roughness(images) <= threshold


def clean_share(images: torch.Tensor, threshold: float = CLEAN_THRESHOLD) -> float:
    """The share of pictures whose background is as flat as the data's (`is_clean`)."""
    return float(is_clean(images, threshold).float().mean())


def _renders(n: int, image_size: int, seed: int, kind: str) -> torch.Tensor:
    """`n` train scenes (1–2 objects): "clean" renders, "soft" ones (`render_corrupted` without its
    speckle: a drifting background, blur, a colour cast) or "corrupted" ones (all its defaults)."""
    from ..data.shapes import ShapesDataset, render, render_corrupted

    data = ShapesDataset("train", length=n, image_size=image_size, seed=seed)
    scenes = [data.scene(i) for i in range(n)]
    if kind == "clean":
        return torch.stack([render(sc, image_size) for sc in scenes])
    noise = {"soft": 0.0, "corrupted": 0.06}[kind]
    return torch.stack([render_corrupted(sc, image_size, seed=seed * 100_003 + i, noise=noise)
                        for i, sc in enumerate(scenes)])


def calibrate_clean_threshold(n: int = 400, image_sizes: Sequence[int] = (32, 64), seed: int = 0) -> dict[str, Any]:
    """Choose `CLEAN_THRESHOLD` on the dataset's own renders.

    At each size, `n` scenes are rendered three ways: clean; "soft" (`data.shapes.render_corrupted`
    with a drifting background, blur and a colour cast but no speckle: flaws the eye forgives)
    and corrupted (the same plus its Gaussian speckle of std 0.06, the imperfection of a
    generated picture the reader was built to ignore). The threshold is the midpoint between
    the 99th percentile of the clean and soft renders' roughness and the corrupted renders' 1st
    percentile (a few soft renders of a near-white background saturate at 1, which a plane does
    not fit: hence a percentile, not the maximum); returned with both distributions' quantiles
    and the shares each side of it.
    """
    clean = torch.cat([background_roughness(_renders(n, s, seed, kind)) for s in image_sizes for kind in ("clean", "soft")])
    bad = torch.cat([background_roughness(_renders(n, s, seed, "corrupted")) for s in image_sizes])
    threshold = 0.5 * (float(clean.quantile(0.99)) + float(bad.quantile(0.01)))
    q = lambda v: {f"q{p:02d}": round(float(v.quantile(p / 100)), 4) for p in (1, 50, 99)} | {"max": round(float(v.max()), 4)}
    return {"threshold": round(threshold, 3), "clean": q(clean), "corrupted": q(bad),
            "clean_share_of_clean": float((clean <= threshold).float().mean()),
            "clean_share_of_corrupted": float((bad <= threshold).float().mean()), "n": n,
            "image_sizes": list(image_sizes), "seed": seed}


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
