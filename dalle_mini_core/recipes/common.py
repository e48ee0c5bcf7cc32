"""What every stage's recipe shares: the optimizer fields, and `fit`, the one call into train.py.

The rules written once here, so that a notebook, ``dalle-mini train`` and a script that train
the same recipe get the same weights:

* warm-up: ``min(recipe.warmup_steps, max(1, steps // 5))`` linear steps, then a cosine decay
  to 10% of the peak learning rate over the steps actually run (`warmup_for`);
* EMA: when a recipe has an ``ema_decay``, the average uses train.py's warm-up
  ``d_n = min(decay, (1 + n) / (10 + n))``, so a short run is not dominated by its random start;
* gradients clipped to norm 1; on CUDA the U-Nets train in channels_last memory layout, with bf16
  autocast and the fused AdamW kernel (train.py), from banks moved to the GPU once (`banks.batches`),
  and, opted in with ``DALLE_MINI_COMPILE=1`` (or ``compile=True``), a loss compiled by ``torch.compile``; on the
  CPU none of these applies, so a seed gives the same weights, bit for bit, as before they existed;
* checkpoints (when a run directory is given): about ten per run, the newest two kept.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..device import get_device, run_mode
from ..options import check_dataset, check_mode

__all__ = ["Recipe", "BatchHook", "warmup_for", "fit", "pick", "compile_requested"]

BatchHook = Callable[[Callable[[int], dict]], Callable[[int], dict]]


@dataclass(kw_only=True)
class Recipe:
    """The fields every stage's recipe has."""

    steps: int  # optimizer steps
    batch_size: int  # items per step
    bank: int  # items rendered once, then drawn from (shapes scenes; emoji rows)
    lr: float = 3e-4  # peak AdamW learning rate
    warmup_steps: int = 200  # linear warm-up steps (at most a fifth of the run: `warmup_for`)
    ema_decay: float | None = 0.999  # EMA of the weights, sampled from (None: no EMA)
    weight_decay: float = 0.0  # AdamW decay on matrices
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decays
    adam_eps: float = 1e-8  # AdamW epsilon
    workers: int = 0  # DataLoader processes rendering the bank


def compile_requested() -> bool:
    """``DALLE_MINI_COMPILE=1``: compile each stage's loss with torch.compile (applied on CUDA only)."""
    value = os.environ.get("DALLE_MINI_COMPILE", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"DALLE_MINI_COMPILE must be 0 or 1, got {value!r}")
    return value == "1"


def warmup_for(recipe: Recipe, steps: int) -> int:
    """The warm-up steps of a run of `steps` steps (the one warm-up rule)."""
    return min(recipe.warmup_steps, max(1, steps // 5))


def pick(recipes: dict[str, dict[str, Any]], dataset: str, mode: str | None, recipe: Any) -> tuple[Any, str]:
    """(`recipe`, or ``recipes[dataset][mode]``; the checked mode), every name checked first."""
    check_dataset(dataset)
    mode = check_mode(mode or run_mode())
    return (recipe if recipe is not None else recipes[dataset][mode]), mode


def fit(model: nn.Module, batch_fn: Callable[[int], dict], recipe: Recipe, *, steps: int | None = None,
        out_dir: str | Path | None = None, max_seconds: float | None = None, seed: int = 0, progress: bool = True,
        wrap: BatchHook | None = None, channels_last: bool = False,
        compile: bool | None = None) -> tuple[nn.Module, Any]:
    """Train `model` on `batch_fn` with train.py's loop as `recipe` says; return (trained, TrainResult).

    `steps` overrides the recipe's count (e.g. the count that fits a time budget), `out_dir` is
    a run directory (checkpoints and metrics.csv; a rerun resumes it), `max_seconds` stops early,
    `wrap` wraps the batch function (a progress meter), `seed` fixes every draw. The trained model
    is the EMA when the recipe keeps one, in eval mode, on the training device, unrounded.
    `compile` (None: ``DALLE_MINI_COMPILE=1`` in the environment) compiles the loss on CUDA only.
    """
    from ..train import TrainConfig, train

    steps = recipe.steps if steps is None else steps
    if channels_last and get_device().type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    config = TrainConfig(
        steps=steps, lr=recipe.lr, warmup_steps=warmup_for(recipe, steps), schedule="cosine", grad_clip=1.0,
        weight_decay=recipe.weight_decay, betas=recipe.betas, adam_eps=recipe.adam_eps,
        ema_decay=recipe.ema_decay, ema_warmup=recipe.ema_decay is not None,
        log_every=max(1, min(50, steps // 20)), ckpt_every=max(1, math.ceil(steps / 10)) if out_dir else None,
        keep_checkpoints=2, out_dir=None if out_dir is None else str(out_dir), seed=seed, progress=progress,
        max_seconds=max_seconds, compile=compile_requested() if compile is None else bool(compile))
    result = train(model, wrap(batch_fn) if wrap is not None else batch_fn, config)
    trained = result.ema if result.ema is not None else result.model
    return trained.eval(), result
