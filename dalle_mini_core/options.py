"""The course's named choices, each defined once with its type and its one validator.

Every option a user can pass as a string (a run mode, a dataset, a stage, what a denoiser
predicts, a noise-schedule kind, a sampler) is a `typing.Literal` here, with the tuple of its
values and a ``check_*`` function that returns the value or raises a one-line ``ValueError``
naming the accepted values. The command line's ``choices=``, the recipes' tables and the model
configs all read these tuples, so a new value is added in one place.

No imports beyond the standard library, so ``dalle-mini --help`` can use it without torch.

Names used with one meaning throughout the package:

* **steps** — optimizer steps when training (``TrainConfig.steps``, a recipe's ``steps``);
  **sampling steps** — denoiser calls' positions when generating (``decoder_steps`` …).
* **dataset** — a dataset *name* ("shapes", "emoji") in recipes, the CLI and reports; a
  dataset *object* is called ``data`` or ``train_set``.
* a model's device is read with `model_device` (the device of its first parameter or buffer).
"""
from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = [
    "RunMode", "DatasetName", "StageName", "Prediction", "ScheduleKind", "SamplerName",
    "RUN_MODES", "DATASETS", "STAGES", "PREDICTIONS", "SCHEDULE_KINDS", "SAMPLER_NAMES",
    "check_choice", "check_mode", "check_dataset", "check_stage", "check_prediction", "check_schedule_kind",
    "check_sampler", "model_device",
]

RunMode = Literal["smoke", "cpu", "gpu"]
"""How big the work is: ``smoke`` (seconds, tests), ``cpu`` (minutes on a laptop), ``gpu``."""

DatasetName = Literal["shapes", "emoji"]
"""The course's datasets: procedural captioned shapes, and 1,870 Noto emoji with their names."""

StageName = Literal["clip", "prior", "decoder", "upsampler"]
"""The four parts of unCLIP, in the order they are trained and used."""

Prediction = Literal["eps", "x0", "v"]
"""What a denoiser's network outputs: the noise ε, the clean image x₀, or the velocity v."""

ScheduleKind = Literal["cosine", "linear"]
"""How the noise levels β_t are laid out over the training timesteps."""

SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpmpp_2m"]
"""The samplers in `sampling.SAMPLERS` (its keys are checked against this list by a test)."""

RUN_MODES: tuple[str, ...] = get_args(RunMode)
DATASETS: tuple[str, ...] = get_args(DatasetName)
STAGES: tuple[str, ...] = get_args(StageName)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else a one-line ``ValueError`` naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_mode(value: Any, name: str = "mode") -> RunMode:
    return check_choice(name, value, RUN_MODES)  # type: ignore[return-value]


def check_dataset(value: Any, name: str = "dataset") -> DatasetName:
    return check_choice(name, value, DATASETS)  # type: ignore[return-value]


def check_stage(value: Any, name: str = "stage") -> StageName:
    return check_choice(name, value, STAGES)  # type: ignore[return-value]


def check_prediction(value: Any, name: str = "prediction") -> Prediction:
    return check_choice(name, value, PREDICTIONS)  # type: ignore[return-value]


def check_schedule_kind(value: Any, name: str = "schedule") -> ScheduleKind:
    return check_choice(name, value, SCHEDULE_KINDS)  # type: ignore[return-value]


def check_sampler(value: Any, name: str = "sampler") -> SamplerName:
    return check_choice(name, value, SAMPLER_NAMES)  # type: ignore[return-value]


def model_device(model: Any) -> Any:
    """The device a module's weights are on (its first parameter, else first buffer; CPU if none)."""
    import torch

    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
