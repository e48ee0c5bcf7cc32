"""The upsampler stage's recipe: a 32→64 diffusion upsampler on a bank of 64×64 images.

Each step draws rows with replacement (emoji images are also mirrored left-right half the time;
shapes captions name left and right, so shapes are not). The corruption of the conditioning
images (blur, noise augmentation) and the prediction target are recipe fields, passed to
`UpsamplerConfig`. AdamW, EMA with warm-up (sampled from); bf16 autocast and channels_last on CUDA.

gpu: 32 base channels (not 64): shapes are flat colours, 64×64 detail is edges, not texture, and
the shipped weights must stay under 40 MB together in float16.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..banks import BankSpec, batches as draw, make
from ..unet import UNetConfig
from ..upsampler import Upsampler, UpsamplerConfig
from .common import BatchHook, Recipe, fit, pick

__all__ = ["UpsamplerRecipe", "RECIPES", "NEEDS_CLIP", "bank_spec", "build", "batches", "train"]

NEEDS_CLIP = False


@dataclass(kw_only=True)
class UpsamplerRecipe(Recipe):
    """How big an upsampler, on how much data, for how long, with which corruption."""

    base_channels: int  # U-Net width at full resolution
    num_res_blocks: int  # residual blocks per U-Net level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # U-Net levels (64 → 32 → 16)
    image_size: int = 64  # output side; the conditioning image is half of it
    prediction: str = "v"  # what the U-Net predicts (v learns far faster than ε here; upsampler.py)
    blur_probability: float = 0.5  # fraction of training conditionings blurred
    blur_sigma: tuple[float, float] = (0.4, 0.6)  # blur σ range, in low-res pixels
    noise_aug_max_t: int = 0  # noise augmentation levels s ~ U{0..max} (0: off)
    noise_aug_sample_t: int | None = None  # the level sampled at (None: min(noise_aug_max_t, 50))


_SHAPES = {
    "smoke": UpsamplerRecipe(steps=3, batch_size=4, bank=16, base_channels=32, num_res_blocks=1, warmup_steps=1,
                             ema_decay=0.9),
    "cpu": UpsamplerRecipe(steps=400, batch_size=16, bank=2000, base_channels=32, num_res_blocks=1, lr=1e-3,
                           warmup_steps=50, ema_decay=0.99),
    "gpu": UpsamplerRecipe(steps=1200, batch_size=128, bank=40000, base_channels=32, num_res_blocks=2, lr=4e-4,
                           warmup_steps=200, ema_decay=0.999, workers=16),
}
RECIPES: dict[str, dict[str, UpsamplerRecipe]] = {
    "shapes": _SHAPES,
    # emoji: the 1,693 train emoji, mirrored at random
    "emoji": {"smoke": _SHAPES["smoke"],
              "cpu": UpsamplerRecipe(steps=400, batch_size=16, bank=1693, base_channels=32, num_res_blocks=1, lr=1e-3,
                                     warmup_steps=50, ema_decay=0.99),
              # gpu: sized for about 90 s on one H100 -- an ESTIMATE, not a measurement: the emoji stages have not
              # run on a GPU yet. It is the shapes run's measured rate (data/weights/train_report.json, H100, bf16,
              # banks on the CPU, before fused AdamW) applied to this recipe's sizes: the shapes upsampler (the
              # same U-Net and batch) trained 1,820 images/s, so 1,200 steps of 128 take about 84 s.
              "gpu": UpsamplerRecipe(steps=1200, batch_size=128, bank=1693, base_channels=32, num_res_blocks=2,
                                     lr=4e-4, warmup_steps=200, ema_decay=0.999)},
}


def bank_spec(recipe: UpsamplerRecipe, dataset: str, n: int | None = None) -> BankSpec:
    """Images at the upsampler's output size."""
    return BankSpec(dataset, recipe.bank if n is None else n, recipe.image_size)


def build(recipe: UpsamplerRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = None
          ) -> Upsampler:
    """The untrained upsampler, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    unet = UNetConfig(image_size=recipe.image_size, base_channels=recipe.base_channels,
                      channel_mult=recipe.channel_mult, num_res_blocks=recipe.num_res_blocks, attention_resolutions=(),
                      num_groups=min(32, recipe.base_channels))
    max_t = recipe.noise_aug_max_t
    sample_t = (min(max_t, 50) if recipe.noise_aug_sample_t is None else recipe.noise_aug_sample_t) if max_t else 0
    return Upsampler(UpsamplerConfig(unet=unet, low_res_size=recipe.image_size // 2,
                                     blur_probability=recipe.blur_probability, blur_sigma=recipe.blur_sigma,
                                     noise_aug_max_t=max_t, noise_aug_sample_t=sample_t, prediction=recipe.prediction))


def batches(recipe: UpsamplerRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("image",), recipe.batch_size, seed=seed, flip=dataset == "emoji")


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: UpsamplerRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[Upsampler, Any]:
    """Train a 32→64 upsampler; return (EMA upsampler in eval mode, TrainResult).

    `bank` holds ``image`` rows at the recipe's image size (`banks.render`). The other arguments as
    `recipes.clip.train`.
    """
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        bank = make(bank_spec(recipe, dataset), seed=seed, workers=recipe.workers)
    model = model if model is not None else build(recipe, dataset, seed=seed)
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap, channels_last=True)
