"""stages.py and train.py's wall-clock budget: the parts of `dalle-mini train` that need no long run."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dalle_mini_core.cli import _parse_budgets
from dalle_mini_core.stages import fit_steps
from dalle_mini_core.train import TrainConfig, read_metrics, train


class Slow(nn.Module):
    """A linear model whose loss takes a known minimum time."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.delay = delay

    def loss(self, batch):
        if self.delay:
            import time

            time.sleep(self.delay)
        return (self.lin(batch["x"]) - batch["y"]).pow(2).mean()


def batch_fn(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True)}


def test_max_seconds_stops_early_and_saves(tmp_path):
    cfg = TrainConfig(steps=10_000, lr=1e-3, warmup_steps=1, ema_decay=None, log_every=1000, max_seconds=0.3,
                      out_dir=str(tmp_path / "run"), progress=False, device="cpu")
    result = train(Slow(delay=0.01), batch_fn, cfg)
    assert 1 <= result.step < 10_000
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows[-1]["step"] == result.step  # the stop is logged like an end
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_max_seconds_must_be_positive():
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(steps=1, max_seconds=0)


def test_fit_steps_follows_the_budget():
    steps, per = fit_steps(Slow(delay=0.01), batch_fn, max_steps=10_000, budget_s=1.0, calib_steps=5)
    assert per >= 0.01
    assert steps == min(10_000, int(1.0 / per))
    assert fit_steps(Slow(), batch_fn, max_steps=7, budget_s=None)[0] == 7
    assert fit_steps(Slow(delay=0.01), batch_fn, max_steps=3, budget_s=100.0, calib_steps=2)[0] == 3


def test_parse_budgets():
    assert _parse_budgets("60", ("clip", "prior")) == {"clip": 60.0, "prior": 60.0}
    assert _parse_budgets("clip=80,prior=5", ("clip", "prior")) == {"clip": 80.0, "prior": 5.0}
    with pytest.raises(ValueError, match="not being trained"):
        _parse_budgets("decoder=3", ("clip",))
    with pytest.raises(ValueError, match="number"):
        _parse_budgets("clip=fast", ("clip",))
