"""What every sampler shares: its types, its input checks, its noise and its loop over levels.

The samplers of `dalle_mini_core.sampling` (DDPM, DDIM, DDIM inversion) and of
`dalle_mini_core.solvers` (Euler, Heun, DPM-Solver++) all take ``(model, x, schedule, *,
model_kwargs, prediction, clip_x0, generator, callback, progress)``; this module holds the pieces
they have in common, so a mistake is refused the same way by all of them:

* `Model` — anything called as ``model(x_t, t, **model_kwargs)``; `Callback` —
  ``callback(i, t, x_t, x0_pred)``, called once per step;
* `check_inputs` — one-line errors for the mistakes that otherwise give silent garbage (a model
  that predicts x₀ sampled as if it predicted ε, a start tensor without a batch dimension, ...);
* `randn_like` — fresh noise drawn on the generator's device, so a seed gives the same numbers;
* `level_steps` — the indices of the levels to walk, optionally with a progress bar.
"""
from __future__ import annotations

from typing import Callable

import torch

from .options import check_prediction
from .schedule import NoiseSchedule

__all__ = ["Model", "Callback", "check_inputs", "randn_like", "level_steps"]

Model = Callable[..., torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn on the generator's device (same seed, same numbers)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def check_inputs(model: Model, x: torch.Tensor, schedule: NoiseSchedule, prediction: str) -> None:
    """Short, clear errors for the mistakes that otherwise give silent garbage."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **kwargs), got {type(model).__name__}")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError("the start tensor must be a float torch.Tensor")
    if x.dim() < 2:
        raise ValueError(f"the start tensor needs a batch dimension, got shape {tuple(x.shape)}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    check_prediction(prediction)
    model_prediction = getattr(model, "prediction", None)
    if model_prediction is not None and model_prediction != prediction:
        raise ValueError(
            f"the model predicts {model_prediction!r} but the sampler was told prediction={prediction!r}"
        )


def level_steps(n: int, progress: bool, reverse: bool, desc: str):
    """Schedule indices n−1 … 0 (or 0 … n−1), optionally wrapped in a tqdm progress bar."""
    steps = range(n - 1, -1, -1) if reverse else range(n)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc=desc, leave=False)
    return steps
