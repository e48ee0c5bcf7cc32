"""A training run's folder: what `dalle_mini_core.train` writes, and how to read it back.

With ``TrainConfig.out_dir`` set, `train.train` keeps everything about a run in one folder::

    out_dir/
      run.json                         what the run is: its TrainConfig, the model's class and config,
                                       its parameter count (a resumed run must match it)
      metrics.csv                      one row every log_every steps: step, loss, lr, grad_norm,
                                       img_per_s, time_s (window means)
      checkpoints/step_00001000/       model, ema and state (.safetensors + .json each), written
                                       to a temporary folder first and renamed: a folder is complete
                                       or absent; only the newest keep_checkpoints are kept

This module knows that layout: `prepare_run_dir` refuses to clobber a different run (or
checkpoints when resume is off) before any work, `save_step` writes a step's folder,
`latest_checkpoint` finds the newest complete one, `load_run_weights` loads it into a model, and
`read_metrics` / `plot_losses` read and draw the metric log.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoints import load_weights, save_checkpoint
from .registry import config_to_dict
from .train_state import save_training_state

if TYPE_CHECKING:  # annotations only: train imports this module
    from .train import EMA, TrainConfig

__all__ = [
    "METRIC_FIELDS",
    "RESUMABLE_FIELDS",
    "run_identity",
    "prepare_run_dir",
    "save_step",
    "latest_checkpoint",
    "load_run_weights",
    "write_metrics",
    "append_metrics",
    "read_metrics",
    "plot_losses",
]

METRIC_FIELDS = ("step", "loss", "lr", "grad_norm", "img_per_s", "time_s")
# TrainConfig fields that may change between a run and its resumption. ``out_dir`` is one: a run
# directory is the run found in it, however the path is spelled (trailing slash, relative path,
# symlink) and wherever the folder was moved.
RESUMABLE_FIELDS = frozenset({"steps", "log_every", "ckpt_every", "keep_checkpoints", "progress", "max_seconds",
                              "device", "ddp_find_unused", "out_dir", "compile"})


def run_identity(config: TrainConfig, model: nn.Module) -> dict[str, Any]:
    """What a run directory records about the run (compared on resume)."""
    model_config = getattr(model, "config", None)
    is_dc = dataclasses.is_dataclass(model_config) and not isinstance(model_config, type)
    return {
        "train_config": config_to_dict(config),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_config": config_to_dict(model_config) if is_dc else None,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for key in ("model_class", "model_config", "num_parameters"):
        if old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)} -> {new.get(key)}")
    old_f, new_f = old["train_config"]["fields"], new["train_config"]["fields"]
    for key in sorted(set(old_f) | set(new_f)):
        if key not in RESUMABLE_FIELDS and old_f.get(key) != new_f.get(key):
            diffs.append(f"{key}: {old_f.get(key)} -> {new_f.get(key)}")
    return diffs


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder ``out_dir/checkpoints/step_XXXXXXXX``, or None."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step_")
            and p.name[5:].isdigit() and (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def load_run_weights(out_dir: str | os.PathLike, model: nn.Module, *, ema: bool = True) -> int:
    """Load the latest checkpoint of a run into `model` (EMA weights when saved and `ema`);
    return its step."""
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise FileNotFoundError(f"no checkpoint in {Path(out_dir) / 'checkpoints'}")
    name = "ema" if ema and (ckpt / "ema.safetensors").is_file() else "model"
    load_weights(ckpt / name, model)
    return int(ckpt.name[5:])


def read_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` (or of ``run_dir/metrics.csv``) as dicts of numbers."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def append_metrics(path: Path, row: dict[str, float]) -> None:
    """Add one row to ``metrics.csv`` (the loop calls it every ``log_every`` steps)."""
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow(row)


def plot_losses(source: str | os.PathLike | list[dict[str, float]], *, title: str | None = None, ax=None):
    """Loss (log scale) against step from a ``metrics.csv``, a run directory or
    `TrainResult.metrics`, with the learning rate on a second axis. Returns the figure."""
    import matplotlib.pyplot as plt

    rows = source if isinstance(source, list) else read_metrics(source)
    if not rows:
        raise ValueError("no metric rows to plot (did the run log anything? see log_every)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 2.8), dpi=72)
    else:
        fig = ax.figure
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], color="C0", lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (window mean)", color="C0")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="C1", lw=0.8, alpha=0.6)
    lr_ax.set_ylabel("lr", color="C1")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    """(Re)write ``metrics.csv`` with `rows` (atomically: a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def prepare_run_dir(out: Path, identity: dict[str, Any], resume: bool, overwrite: bool, rank: int) -> Path | None:
    """Check `out` against this run; return the checkpoint to resume from (or None).

    Every rank checks (so every rank raises the same error); only rank 0 writes.
    """
    run_json = out / "run.json"
    existing = latest_checkpoint(out)
    if run_json.is_file() and not overwrite:
        diffs = _identity_differences(json.loads(run_json.read_text()), identity)
        if diffs:
            raise ValueError(
                f"{out} holds a run with a different config ({'; '.join(diffs)}); nothing was changed. "
                "To continue that run, use its config; to start this one, use another out_dir "
                "(or move that folder aside)."
            )
    if existing is not None and not resume and not overwrite:
        raise ValueError(
            f"{out} already has checkpoints (latest {existing.name}) and resume=False would overwrite "
            "them; nothing was changed. Pass resume=True to continue that run, or use another out_dir "
            "to start a new one."
        )
    if overwrite and rank == 0:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for name in ("metrics.csv", "run.json"):
            (out / name).unlink(missing_ok=True)
        existing = None
    elif overwrite:
        existing = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not run_json.is_file():
            run_json.write_text(json.dumps(identity, indent=2, allow_nan=False) + "\n")
    return existing if resume else None


def save_step(ckpt_root: Path, step: int, model: nn.Module, ema: EMA | None, optimizer: torch.optim.Optimizer,
          config: TrainConfig, extra: dict[str, Any]) -> Path:
    """Write ``checkpoints/step_XXXXXXXX/{model,ema,state}`` atomically (temp folder, then rename)."""
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model_config = getattr(model, "config", None)
    if not (dataclasses.is_dataclass(model_config) and not isinstance(model_config, type)):
        model_config = None
    meta = {"step": step, "train_config": config_to_dict(config)}
    save_checkpoint(tmp / "model", model, model_config, extra=meta)
    if ema is not None:
        save_checkpoint(tmp / "ema", ema.model, model_config, extra={**meta, "ema_decay": ema.decay})
    save_training_state(tmp / "state", optimizer=optimizer, step=step, extra=extra)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if config.keep_checkpoints is not None:
        done = sorted((p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step_")),
                      key=lambda p: int(p.name[5:]))
        for old in done[: -config.keep_checkpoints]:
            shutil.rmtree(old)
    return final
