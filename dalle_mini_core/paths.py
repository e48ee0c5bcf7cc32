"""Where the course keeps its files: the repository's ``data/`` folder and run outputs.

The package is installed in editable mode from the repository, so ``data/`` sits beside it.
``DALLE_MINI_DATA`` points elsewhere (for instance at a copy of ``data/`` on a faster disk);
``DALLE_MINI_RUNS`` sets where training runs and generated images go (default ``runs/``).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "data_dir", "runs_dir"]


def repo_root() -> Path:
    """The repository root (the folder that holds ``dalle_mini_core/``)."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The shipped data folder (datasets, datasheets, weights)."""
    env = os.environ.get("DALLE_MINI_DATA")
    path = Path(env) if env else repo_root() / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"data folder {path} not found; set DALLE_MINI_DATA to the repository's data/ folder"
        )
    return path


def runs_dir() -> Path:
    """Where runs and outputs are written (created on first use)."""
    env = os.environ.get("DALLE_MINI_RUNS")
    path = Path(env) if env else repo_root() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
