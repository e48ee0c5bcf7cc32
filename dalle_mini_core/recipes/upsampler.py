"""The upsampler stage's recipe: a 32→64 diffusion upsampler on a bank of 64×64 images.

Each step draws rows with replacement (emoji images are also mirrored left-right half the time;
shapes captions name left and right, so shapes are not). The corruption of the conditioning
images (blur, noise augmentation) and the prediction target are recipe fields, passed to
`UpsamplerConfig`. AdamW, EMA with warm-up (sampled from); bf16 autocast and channels_last on CUDA.

gpu: 32 base channels (not 64): shapes are flat colours, 64×64 detail is edges, not texture, and
the shipped weights must stay under 40 MB together in float16. emoji gpu: 16 base channels, the
smallest part, so that the four emoji parts fit in about 10 MB together (the decoder, which draws
the picture, gets the room; the upsampler only sharpens it).
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
    num_groups: int | None = None  # GroupNorm groups (None: min(32, base_channels))


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
              # gpu: sized for the shipped-weights budget (the four emoji parts at most 10 MB in float16 together,
              # tests/test_vocab_trim.py): base 16 (not the shapes upsampler's 32), two blocks per level, 0.41 M
              # weights (0.8 MB) instead of 1.6 M; 8 GroupNorm groups (min(32, base) would be one channel per
              # group). What was traded: width for detail at 64×64; the decoder got the room. Time: NOT
              # measured on a GPU; the shapes upsampler (twice as wide, same batch) trained 1,820 images/s on an
              # H100 (data/weights/train_report.json), so 1,200 steps of 128 take at most about 84 s if this
              # narrower U-Net is no slower.
              "gpu": UpsamplerRecipe(steps=1200, batch_size=128, bank=1693, base_channels=16, num_res_blocks=2,
                                     lr=4e-4, warmup_steps=200, ema_decay=0.999, num_groups=8)},
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
                      num_groups=recipe.num_groups or min(32, recipe.base_channels))
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
