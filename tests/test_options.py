"""Tests for options.py: each named choice is defined once, validated in one place, and the
registries, the command line and the modules that use a choice agree with its list."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dalle_mini_core import options
from dalle_mini_core.options import (
    DATASETS,
    PREDICTIONS,
    RUN_MODES,
    SAMPLER_NAMES,
    SCHEDULE_KINDS,
    STAGES,
    check_choice,
    check_dataset,
    check_mode,
    check_prediction,
    check_sampler,
    check_schedule_kind,
    check_stage,
    model_device,
)

CHECKS = [
    (check_mode, RUN_MODES, "mode"),
    (check_dataset, DATASETS, "dataset"),
    (check_stage, STAGES, "stage"),
    (check_prediction, PREDICTIONS, "prediction"),
    (check_schedule_kind, SCHEDULE_KINDS, "schedule"),
    (check_sampler, SAMPLER_NAMES, "sampler"),
]


@pytest.mark.parametrize("check, values, name", CHECKS, ids=[c[2] for c in CHECKS])
def test_every_value_is_accepted_and_returned(check, values, name):
    assert values and len(set(values)) == len(values)
    for value in values:
        assert check(value) == value


@pytest.mark.parametrize("check, values, name", CHECKS, ids=[c[2] for c in CHECKS])
@pytest.mark.parametrize("bad", ["nope", "", None, 3, b"cpu", "EPS ", ["cpu"]])
def test_anything_else_is_refused_in_one_line_naming_the_values(check, values, name, bad):
    with pytest.raises(ValueError) as err:
        check(bad)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name} must be one of ")
    for value in values:
        assert repr(value) in msg
    assert msg.endswith(f"got {bad!r}")


def test_a_near_miss_in_case_is_refused():
    with pytest.raises(ValueError, match="mode must be one of 'smoke', 'cpu', 'gpu'; got 'CPU'"):
        check_mode("CPU")


def test_the_name_in_the_message_is_the_callers():
    with pytest.raises(ValueError, match=r"^DALLE_MINI_MODE must be one of"):
        check_mode("fast", "DALLE_MINI_MODE")
    with pytest.raises(ValueError, match=r"^decoder_sampler must be one of"):
        check_sampler("ddim2", "decoder_sampler")
    assert check_choice("colour", "red", ("red", "blue")) == "red"
    with pytest.raises(ValueError, match=r"^colour must be one of 'red', 'blue'; got 'green'$"):
        check_choice("colour", "green", ("red", "blue"))


def test_the_tuples_are_the_literal_types_values():
    from typing import get_args

    assert RUN_MODES == get_args(options.RunMode) == ("smoke", "cpu", "gpu")
    assert DATASETS == get_args(options.DatasetName)
    assert STAGES == get_args(options.StageName) == ("clip", "prior", "decoder", "upsampler")  # the order unCLIP runs
    assert PREDICTIONS == get_args(options.Prediction)
    assert SCHEDULE_KINDS == get_args(options.ScheduleKind)
    assert SAMPLER_NAMES == get_args(options.SamplerName)


# --- the registries and the modules that use a choice agree with options --------------------------


def test_the_samplers_registry_has_exactly_the_sampler_names():
    from dalle_mini_core.sampling import DEFAULT_SPACING, SAMPLERS, check_sampler as sampling_check

    assert set(SAMPLERS) == set(SAMPLER_NAMES)
    assert set(DEFAULT_SPACING) == set(SAMPLER_NAMES)
    for name in SAMPLER_NAMES:
        assert sampling_check(name) == name
    with pytest.raises(ValueError, match="sampler must be one of"):
        sampling_check("euler_a")


def test_device_run_modes_are_the_options_run_modes(monkeypatch):
    from dalle_mini_core import device

    assert device.MODES == RUN_MODES
    for mode in RUN_MODES:
        monkeypatch.setenv("DALLE_MINI_MODE", mode)
        assert device.run_mode() == mode
    monkeypatch.setenv("DALLE_MINI_MODE", "turbo")
    with pytest.raises(ValueError, match="^DALLE_MINI_MODE must be one of 'smoke', 'cpu', 'gpu'; got 'turbo'$"):
        device.run_mode()


def test_predictions_and_schedule_kinds_are_checked_through_options():
    from dalle_mini_core import diffusion
    from dalle_mini_core.schedule import NoiseSchedule

    assert diffusion.PREDICTIONS is PREDICTIONS and diffusion.check_prediction is check_prediction
    for kind in SCHEDULE_KINDS:
        assert NoiseSchedule.make(kind, 10).num_timesteps == 10
    with pytest.raises(ValueError, match="^kind must be one of 'cosine', 'linear'; got 'sigmoid'$"):
        NoiseSchedule.make("sigmoid", 10)


def test_the_pipelines_the_course_names_are_its_datasets():
    from dalle_mini_core.pipeline_io import NOT_SHIPPED_YET, SHIPPED

    assert set(SHIPPED) | set(NOT_SHIPPED_YET) == set(DATASETS)


def test_the_command_lines_choices_come_from_options():
    import argparse

    from dalle_mini_core.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = {a.dest: a for a in sub.choices["train"]._actions}
    assert list(train["stage"].choices) == ["all", *STAGES]
    assert tuple(train["mode"].choices) == RUN_MODES
    evaluate = {a.dest: a for a in sub.choices["eval"]._actions}
    assert tuple(evaluate["dataset"].choices) == DATASETS


# --- model_device ----------------------------------------------------------------------------------


def test_model_device_reads_the_first_parameter_then_a_buffer_else_the_cpu():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    buffers_only = nn.Module()
    buffers_only.register_buffer("table", torch.zeros(3, device="meta"))
    assert model_device(buffers_only) == torch.device("meta")
    assert model_device(nn.Module()) == torch.device("cpu")  # nothing to ask: the CPU


def test_options_imports_without_torch():
    """`dalle-mini --help` reads the choices from options: importing it must not import torch."""
    root = Path(__file__).resolve().parent.parent
    code = "import sys, dalle_mini_core.options as o; assert 'torch' not in sys.modules, 'torch imported'; print(o.__file__)"
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=root)
    assert Path(out.stdout.strip()).resolve() == root / "dalle_mini_core" / "options.py"
