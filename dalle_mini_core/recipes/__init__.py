"""Recipes: how each stage is trained, one module per stage, one `train` per stage.

Every stage module (`clip`, `prior`, `decoder`, `upsampler`, and `uncond` for notebook 05's
unconditional denoiser) has the same parts:

* a typed recipe dataclass (the fields of `common.Recipe` and the stage's own sizes);
* ``RECIPES[dataset][mode]`` — dataset from `options.DATASETS`, mode from `options.RUN_MODES`;
* ``bank_spec(recipe, dataset)`` — the bank it draws from (`banks.BankSpec`);
* ``build(recipe, dataset, seed=…)`` — the untrained model, its weights drawn from the seed;
* ``batches(recipe, bank, dataset, seed=…)`` — its batch function (`banks.batches`);
* ``train(dataset, mode, recipe=…, steps=…, bank=…, clip=…, out_dir=…, max_seconds=…,
  seed=…, progress=…, wrap=…)`` — THE function that the notebooks, ``dalle-mini train``
  (`stages.train_all`) and the scripts call; it ends in `common.fit`, the one call into train.py.

So the weights a notebook trains and the weights ``dalle-mini train`` ships come from one path:
the same recipe and seed give the same weights (tests/test_recipes.py). `STAGE_RECIPES` maps
each unCLIP stage name (`options.STAGES`) to its module, in training order.
"""
from __future__ import annotations

from types import ModuleType

from . import clip, decoder, prior, uncond, upsampler
from .common import Recipe, fit, warmup_for

__all__ = ["clip", "prior", "decoder", "upsampler", "uncond", "STAGE_RECIPES", "Recipe", "fit", "warmup_for"]

STAGE_RECIPES: dict[str, ModuleType] = {"clip": clip, "prior": prior, "decoder": decoder, "upsampler": upsampler}
