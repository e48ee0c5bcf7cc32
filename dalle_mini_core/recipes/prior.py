"""The prior stage's recipe: the diffusion prior on a CLIP's (text, image) embedding pairs.

The bank is rendered once and embedded once by the frozen CLIP (`banks.embed`), so training
never touches an image: each step draws rows with replacement. AdamW, weight decay 0.01,
EMA 0.999 (sampled from).

The caption tokens are left out in every mode (``use_tokens=False``): on a CPU they make the
sequence nine times longer, and on a GPU their 49,408 × 256 token table alone would be 25 MB in
float16, over the shipped pipeline's 40 MB; the captions reach the prior as z_t anyway. So no
prior of these recipes has a token table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..banks import BankSpec, batches as draw, make
from ..data.tokens import DEFAULT_CONTEXT_LENGTH
from ..prior import DiffusionPrior, PriorConfig
from .common import BatchHook, Recipe, fit, pick

__all__ = ["PriorRecipe", "RECIPES", "NEEDS_CLIP", "bank_spec", "build", "batches", "train"]

NEEDS_CLIP = True


@dataclass(kw_only=True)
class PriorRecipe(Recipe):
    """How big a prior, on how many embedded scenes, for how long."""

    width: int  # transformer width
    depth: int  # transformer blocks
    heads: int  # attention heads
    use_tokens: bool = False  # also feed the caption tokens (see the module docstring)
    weight_decay: float = 0.01


_SHAPES = {
    "smoke": PriorRecipe(width=32, depth=1, heads=2, steps=3, batch_size=16, bank=64),
    "cpu": PriorRecipe(width=128, depth=4, heads=4, steps=4000, batch_size=256, bank=4000),
    "gpu": PriorRecipe(width=256, depth=6, heads=8, steps=20000, batch_size=1024, bank=200_000, workers=16),
}
RECIPES: dict[str, dict[str, PriorRecipe]] = {
    "shapes": _SHAPES,
    # emoji: the 1,693 train emoji × 5 caption templates (8,465 rows)
    "emoji": {"smoke": _SHAPES["smoke"],
              "cpu": PriorRecipe(width=128, depth=4, heads=4, steps=2000, batch_size=256, bank=8465),
              # gpu: sized for the shipped-weights budget (the four emoji parts at most 10 MB in float16 together,
              # tests/test_vocab_trim.py): width 128, depth 4 (the cpu recipe's size), 0.86 M weights (1.7 MB),
              # instead of the shapes prior's width 256, depth 6 (4.9 M, 9.9 MB: the whole budget). What was
              # traded: capacity to map 8,465 captions onto 1,693 image embeddings, a smaller task than the
              # shapes world's; the decoder got the room. Time: NOT measured on a GPU; the shapes prior (wider
              # and deeper, same batch) trained 28,161 embeddings/s on an H100 (data/weights/train_report.json),
              # so 2,500 steps of 1,024 take at most about 91 s if this smaller prior is no slower (about 300
              # passes over the 8,465 rows).
              "gpu": PriorRecipe(width=128, depth=4, heads=4, steps=2500, batch_size=1024, bank=8465)},
}


def bank_spec(recipe: PriorRecipe, dataset: str, n: int | None = None) -> BankSpec:
    """Embedded scenes (the decoder's bank when the sizes agree: one rendering for both)."""
    return BankSpec(dataset, recipe.bank if n is None else n, 32, embedded=True)


def build(recipe: PriorRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = 64,
          context_length: int = DEFAULT_CONTEXT_LENGTH) -> DiffusionPrior:
    """The untrained prior for `embed_dim`-dimensional CLIP embeddings, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return DiffusionPrior(PriorConfig(embed_dim=embed_dim, width=recipe.width, depth=recipe.depth, heads=recipe.heads,
                                      context_length=context_length, use_tokens=recipe.use_tokens))


def batches(recipe: PriorRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("text_emb", "image_emb", "tokens"), recipe.batch_size, seed=seed)


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: PriorRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[DiffusionPrior, Any]:
    """Train a diffusion prior; return (EMA prior in eval mode, TrainResult).

    `bank` holds ``text_emb``, ``image_emb`` and ``tokens`` rows (`banks.make` of `bank_spec`, or
    `prior.embed_dataset`); without one, `clip` embeds ``RECIPES[dataset][mode]``'s bank. The other
    arguments as `recipes.clip.train`.
    """
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        if clip is None:
            raise ValueError("the prior trains on a CLIP's embeddings: give clip= (or a bank= of them)")
        bank = make(bank_spec(recipe, dataset), seed=seed, clip=clip, workers=recipe.workers)
    if model is None:
        model = build(recipe, dataset, seed=seed, embed_dim=bank["image_emb"].shape[1],
                      context_length=bank["tokens"].shape[1])
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap)
