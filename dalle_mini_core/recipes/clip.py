"""The CLIP stage's recipe: a tiny CLIP trained contrastively on a bank of captioned scenes.

Each step draws `batch_size` DISTINCT rows of a bank rendered once (a contrastive batch needs
negatives: each image is contrasted with the batch's other captions). AdamW with β₂ = 0.98 and
ε = 1e-6 (Radford et al. 2021, §2.5), weight decay 0.05, no EMA.

Measured with seed 0 (the README's results table): shapes "gpu" (the shipped CLIP) reaches
97% or more text→image top-1 among 100 test scenes; emoji: the train split is learnt by heart
within 800 steps and test-split retrieval (unseen emoji names) stops improving there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..banks import BankSpec, batches as draw, make
from ..clip import CLIPConfig, CLIPModel, clip_config
from ..options import check_dataset
from .common import BatchHook, Recipe, fit, pick

__all__ = ["CLIPRecipe", "RECIPES", "NEEDS_CLIP", "build_config", "bank_spec", "build", "batches", "train",
           "load_or_train"]

NEEDS_CLIP = False  # this stage makes the CLIP the others need


@dataclass(kw_only=True)
class CLIPRecipe(Recipe):
    """How long and how hard to train a tiny CLIP in one run mode."""

    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-6
    config: CLIPConfig | None = None  # the architecture (None: the dataset's preset, `clip.clip_config`)


RECIPES: dict[str, dict[str, CLIPRecipe]] = {
    "shapes": {
        "smoke": CLIPRecipe(steps=4, batch_size=16, bank=64, warmup_steps=2),
        "cpu": CLIPRecipe(steps=1200, batch_size=128, bank=4000),
        "gpu": CLIPRecipe(steps=2400, batch_size=128, bank=200_000, workers=16),
    },
    "emoji": {  # 1,693 train emoji, each with five caption templates: 8,465 rows
        "smoke": CLIPRecipe(steps=4, batch_size=16, bank=64, warmup_steps=2),
        "cpu": CLIPRecipe(steps=800, batch_size=128, bank=8465),
        # gpu: 800 steps (test retrieval stops improving there, module docstring); at the shapes CLIP's
        # measured 3,339 pairs/s on an H100 about 31 s -- an estimate: the emoji CLIP (64×64, patch 8)
        # has not been timed on a GPU
        "gpu": CLIPRecipe(steps=800, batch_size=128, bank=8465),
    },
}


def build_config(recipe: CLIPRecipe, dataset: str = "shapes") -> CLIPConfig:
    """The CLIP architecture of `recipe` (its own, or the dataset's preset)."""
    return recipe.config if recipe.config is not None else clip_config(dataset)


def bank_spec(recipe: CLIPRecipe, dataset: str, n: int | None = None) -> BankSpec:
    """The scenes this stage draws from (`n` overrides the recipe's bank size)."""
    return BankSpec(dataset, recipe.bank if n is None else n, build_config(recipe, dataset).image_size)


def build(recipe: CLIPRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = None) -> CLIPModel:
    """The untrained CLIP, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return CLIPModel(build_config(recipe, dataset))


def batches(recipe: CLIPRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("image", "tokens"), recipe.batch_size, seed=seed, distinct=True)


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: CLIPRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[CLIPModel, Any]:
    """Train the tiny CLIP for `dataset`; return (CLIP in eval mode, train.py's TrainResult).

    `recipe` (default ``RECIPES[dataset][mode]``, mode from `run_mode()`); `steps` overrides its
    count; `bank` reuses rendered scenes (`banks.render`); `model` an already built CLIP;
    `out_dir` a resumable run directory; `max_seconds` a wall-clock stop; `wrap` wraps the batch
    function; `clip` is unused (every stage's `train` takes it).
    """
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        bank = make(bank_spec(recipe, dataset), seed=seed, workers=recipe.workers)
    model = model if model is not None else build(recipe, dataset, seed=seed)
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap)


def load_or_train(dataset: str = "shapes", mode: str | None = None, *, progress: bool = False) -> CLIPModel:
    """The dataset's CLIP: the shipped weights ``data/weights/<dataset>_clip`` (sha256-checked) when
    present, else trained now with ``RECIPES[dataset][mode]`` (a few minutes in cpu mode); in eval
    mode on the default device."""
    from ..checkpoints import load_pretrained
    from ..device import get_device

    check_dataset(dataset)
    try:
        return load_pretrained(f"{dataset}_clip", CLIPModel, device=get_device()).eval()
    except FileNotFoundError:
        return train(dataset, mode, progress=progress)[0].eval()
