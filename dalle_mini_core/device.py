"""Device choice, seeding and run modes: the one place that knows about hardware.

Every notebook and module asks this module for its device (`get_device`), seeds with
`seed_everything`, and sizes its work with `run_mode()` / `by_mode(...)`. Nothing else in
the course calls `.cuda()` or reads `CUDA_VISIBLE_DEVICES`.

Run modes (also in the README, "Run modes"):

* ``smoke`` — set by the test suite (``DALLE_MINI_SMOKE=1``): a handful of steps, seconds.
* ``cpu``   — the default without a GPU: each notebook finishes in minutes (the README's course
  map lists each one's measured time).
* ``gpu``   — the default with a GPU: the full course run on the reduced datasets.

``DALLE_MINI_MODE=smoke|cpu|gpu`` overrides the automatic choice.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator, TypeVar

import numpy as np
import torch

from .options import RUN_MODES, RunMode, check_mode

__all__ = ["get_device", "seed_everything", "run_mode", "by_mode", "autocast", "describe"]

MODES = RUN_MODES  # ("smoke", "cpu", "gpu"): `options.RunMode`
T = TypeVar("T")


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    `prefer` (or the environment variable ``DALLE_MINI_DEVICE``) forces one, e.g. ``"cpu"``.
    """
    prefer = prefer or os.environ.get("DALLE_MINI_DEVICE")
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for, but PyTorch sees no CUDA GPU")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU `torch.Generator` with that seed.

    The same seed gives the same numbers on the same machine. Prefer passing the returned
    generator explicitly to functions that draw random numbers.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def run_mode() -> RunMode:
    """``"smoke"``, ``"cpu"`` or ``"gpu"`` (see the module docstring)."""
    forced = os.environ.get("DALLE_MINI_MODE", "").strip().lower()
    if forced:
        return check_mode(forced, "DALLE_MINI_MODE")
    if os.environ.get("DALLE_MINI_SMOKE", "").strip() not in ("", "0", "false", "False"):
        return "smoke"
    return "gpu" if torch.cuda.is_available() else "cpu"


def by_mode(*, smoke: T, cpu: T, gpu: T | None = None) -> T:
    """Pick a value by run mode, e.g. ``steps = by_mode(smoke=5, cpu=2000, gpu=20000)``.

    `gpu` defaults to the `cpu` value.
    """
    mode = run_mode()
    if mode == "smoke":
        return smoke
    if mode == "gpu" and gpu is not None:
        return gpu
    return cpu


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Mixed precision where it pays: bf16 autocast on CUDA, plain fp32 elsewhere."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def describe() -> dict[str, Any]:
    """Versions, device and run mode, for the environment check at the top of a notebook."""
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(get_device()),
        "run_mode": run_mode(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except Exception as exc:  # pragma: no cover - shown to the student, not hidden
        info["open_clip"] = f"not importable ({exc})"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
