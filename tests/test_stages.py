"""stages.py, runs.py and train.py's wall-clock budget: the parts of `dalle-mini train` that need no long run."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dalle_mini_core.cli import _parse_budgets
from dalle_mini_core.runs import fit_steps
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


# --- dalle-mini train: readable progress, strict JSON, rank 0 only -------------------------------


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_train_progress_is_readable_lines(tmp_path):
    import re

    from dalle_mini_core.stages import train_all

    lines: list[str] = []
    train_all(mode="smoke", out_dir=tmp_path, stages=("clip",), max_steps={"clip": 3}, log=lines.append,
              progress_every=0)
    steps = [line for line in lines if line.startswith("[clip] step")]
    assert len(steps) == 2, lines  # steps 1 and 2 done (the last step's line is the "done" line)
    pattern = r"\[clip\] step ([12])/3 \(\d+%\)  loss \d+\.\d{4}  \d+\.\d images/s  ETA \d+ s"
    assert all(re.fullmatch(pattern, line) for line in steps), steps
    assert re.fullmatch(r"\[clip\] done: 3 steps in \d+ s, final loss \d+\.\d{4}, \d+\.\d images/s",
                        next(line for line in lines if line.startswith("[clip] done")))
    assert not any("nan" in line.lower() or "{" in line for line in lines), lines  # no raw JSON, no "nan ms/step"
    # Every JSON file written is strict JSON (no bare NaN, e.g. for the calibration without a budget).
    for path in [tmp_path / "train_report.json", tmp_path / "shapes_clip.json",
                 *tmp_path.glob("train_runs/*/*/stage.json")]:
        _strict(path.read_text())
    assert _strict((tmp_path / "train_report.json").read_text())["stages"]["clip"]["ms_per_step_calibration"] is None


def test_train_cli_says_what_it_did_in_words(tmp_path, capsys):
    from dalle_mini_core.cli import main

    assert main(["train", "clip", "--mode", "smoke", "--out", str(tmp_path), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "[clip] training 2 steps" in out and "[clip] done: 2 steps" in out
    assert "{" not in out and "nan" not in out.lower()
    assert f"shapes_clip in {tmp_path}" in out


def test_under_torchrun_only_rank_0_prints_and_writes(tmp_path, capsys, monkeypatch):
    from dalle_mini_core.cli import main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    out = tmp_path / "weights"
    assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "1"]) == 0
    said = capsys.readouterr()
    assert said.out == "" and said.err == ""
    assert not out.exists()
    # rank 0, same command: prints and writes
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "clip", "--mode", "smoke", "--out", str(out), "--steps", "1"]) == 0
    assert capsys.readouterr().out and (out / "shapes_clip.safetensors").is_file()


def test_budget_is_refused_under_torchrun(monkeypatch):
    from dalle_mini_core.stages import train_all

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="not available under torchrun"):
        train_all(mode="smoke", out_dir="unused", stages=("clip",), budgets={"clip": 5.0})
