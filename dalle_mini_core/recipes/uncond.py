"""The unconditional shapes denoiser's recipe (notebook 05 samples the shipped one).

A U-Net denoiser on one-object 32×32 shapes scenes, trained through the same `fit` as the four
unCLIP stages: a bank of rendered scenes, rows drawn with replacement, EMA with warm-up.
Its checkpoint's JSON stores how it samples (`schedule_fields`): the noise-schedule kind, the
number of timesteps and what the network predicts; `denoiser` rebuilds the `Denoiser` from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..banks import BankSpec, batches as draw, make
from ..diffusion import Denoiser
from ..options import check_prediction, check_schedule_kind
from ..schedule import NoiseSchedule
from ..unet import UNet, UNetConfig
from .common import BatchHook, Recipe, fit, pick

__all__ = ["UncondRecipe", "RECIPES", "bank_spec", "build", "batches", "train", "schedule_fields", "denoiser",
           "DEFAULT_SCHEDULE"]

# How the shipped shapes_uncond was trained: the values a checkpoint without these fields gets (the
# shipped JSON records the schedule and prediction as notes, and T as "num_timesteps").
DEFAULT_SCHEDULE = {"schedule": "cosine", "timesteps": 1000, "prediction": "eps"}


@dataclass(kw_only=True)
class UncondRecipe(Recipe):
    """An unconditional U-Net denoiser on one-object shapes scenes."""

    base_channels: int = 32
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8,)
    num_groups: int = 8
    image_size: int = 32
    schedule: str = "cosine"  # noise-schedule kind
    timesteps: int = 1000  # T of the training schedule
    prediction: str = "eps"  # what the network predicts
    warmup_steps: int = 500


_SHAPES = {
    "smoke": UncondRecipe(steps=3, batch_size=8, bank=32, base_channels=16, num_res_blocks=1, num_groups=8,
                          warmup_steps=1, ema_decay=0.9),
    "cpu": UncondRecipe(steps=1000, batch_size=64, bank=4000),
    # gpu: the shipped file, 3,500 steps of 256 on an H100 in 237 s (scripts/train_uncond_shapes.py fits the steps)
    "gpu": UncondRecipe(steps=40000, batch_size=256, bank=20000),
}
RECIPES: dict[str, dict[str, UncondRecipe]] = {"shapes": _SHAPES}


def bank_spec(recipe: UncondRecipe, dataset: str = "shapes", n: int | None = None) -> BankSpec:
    return BankSpec(dataset, recipe.bank if n is None else n, recipe.image_size, num_objects=(1,))


def build(recipe: UncondRecipe, dataset: str = "shapes", *, seed: int = 0, embed_dim: int | None = None) -> Denoiser:
    """The untrained denoiser (U-Net, schedule, prediction), its weights drawn from `seed`."""
    check_schedule_kind(recipe.schedule)
    check_prediction(recipe.prediction)
    torch.manual_seed(seed)
    config = UNetConfig(image_size=recipe.image_size, base_channels=recipe.base_channels, channel_mult=(1, 2, 2),
                        num_res_blocks=recipe.num_res_blocks, attention_resolutions=recipe.attention_resolutions,
                        num_heads=4, num_groups=recipe.num_groups)
    return Denoiser(UNet(config), NoiseSchedule.make(recipe.schedule, recipe.timesteps), prediction=recipe.prediction)


def batches(recipe: UncondRecipe, bank: dict[str, Any], dataset: str = "shapes", *, seed: int = 0
            ) -> Callable[[int], dict]:
    return draw(bank, ("image",), recipe.batch_size, seed=seed)


def train(dataset: str = "shapes", mode: str | None = None, *, recipe: UncondRecipe | None = None,
          steps: int | None = None, bank: dict[str, Any] | None = None, clip: Any = None, model: Any = None,
          out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
          wrap: BatchHook | None = None) -> tuple[Denoiser, Any]:
    """Train the unconditional denoiser; return (EMA `Denoiser` in eval mode, TrainResult).
    The arguments as `recipes.clip.train` (shapes only)."""
    if dataset != "shapes":
        raise ValueError(f"the unconditional denoiser has recipes for 'shapes' only, got {dataset!r}")
    recipe, _ = pick(RECIPES, dataset, mode, recipe)
    if bank is None:
        bank = make(bank_spec(recipe, dataset), seed=seed, workers=recipe.workers)
    model = model if model is not None else build(recipe, dataset, seed=seed)
    return fit(model, batches(recipe, bank, dataset, seed=seed), recipe, steps=steps, out_dir=out_dir,
               max_seconds=max_seconds, seed=seed, progress=progress, wrap=wrap, channels_last=True)


def schedule_fields(source: UncondRecipe | Mapping[str, Any] | None) -> dict[str, Any]:
    """{"schedule", "timesteps", "prediction"}: from a recipe (to store in a checkpoint's JSON), or
    read back from a checkpoint's ``extra`` (fields it lacks take `DEFAULT_SCHEDULE`'s values)."""
    if isinstance(source, UncondRecipe):
        return {"schedule": source.schedule, "timesteps": source.timesteps, "prediction": source.prediction}
    extra = dict(source or {})
    if "timesteps" not in extra and "num_timesteps" in extra:  # the shipped file's JSON names it so
        extra["timesteps"] = extra["num_timesteps"]
    fields = {k: extra.get(k, v) for k, v in DEFAULT_SCHEDULE.items()}
    check_schedule_kind(fields["schedule"], "the checkpoint's schedule")
    check_prediction(fields["prediction"], "the checkpoint's prediction")
    if isinstance(fields["timesteps"], bool) or not isinstance(fields["timesteps"], int) or fields["timesteps"] < 1:
        raise ValueError(f"the checkpoint's timesteps must be a whole number, at least 1, got {fields['timesteps']!r}")
    return fields


def denoiser(net: torch.nn.Module, extra: Mapping[str, Any] | None) -> Denoiser:
    """The `Denoiser` a trained U-Net samples with, as its checkpoint's ``extra`` describes it."""
    f = schedule_fields(extra)
    return Denoiser(net, NoiseSchedule.make(f["schedule"], f["timesteps"]), prediction=f["prediction"])
