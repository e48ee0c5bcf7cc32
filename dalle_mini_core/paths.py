"""Where the course keeps its files: the repository's ``data/`` folder and run outputs.

The package is installed in editable mode from the repository, so ``data/`` sits beside it.
``DALLE_MINI_DATA`` points elsewhere (for instance at a copy of ``data/`` on a faster disk).
Outputs (training runs, generated images) go to ``runs/`` in the current working directory, or
to ``DALLE_MINI_RUNS``: never into the package's own folder, which may be a read-only install.
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
    """Where runs and outputs are written: ``$DALLE_MINI_RUNS``, else ``./runs`` (created on first use)."""
    env = os.environ.get("DALLE_MINI_RUNS")
    path = Path(env) if env else Path.cwd() / "runs"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the runs folder {path} ({exc.strerror}); set DALLE_MINI_RUNS "
                                 "to a folder you can write") from None
    return path
