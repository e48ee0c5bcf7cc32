"""Training state: optimizer moments, RNG states and the step, saved for an exact resume.

`save_training_state` writes the state an optimizer keeps between steps (AdamW's moment
estimates ``exp_avg`` and ``exp_avg_sq``, its step counts) and the random-number generators'
states (Python, NumPy, PyTorch on the CPU and every CUDA device) as two files, like a model
checkpoint: the tensors flattened into ``name.safetensors`` (``optimizer/<param index>/<name>``,
``rng/torch``, ...), the rest (param groups, the step, ``extra``) in ``name.json``. Nothing here
pickles. `load_training_state` puts them back, so `dalle_mini_core.train` can stop at step k and
continue to the same weights as a run that never stopped.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import (
    CheckpointMismatchError,
    _atomic_save_tensors,
    _atomic_write_json,
    _read_json_bytes,
    _stem,
    _tensors_from_bytes,
)
from .registry import _class_path, _decode, _encode

__all__ = ["capture_rng_state", "restore_rng_state", "save_training_state", "load_training_state"]

STATE_FORMAT = "dalle-mini-core/train-state/v1"


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy and PyTorch (CPU and every CUDA device) RNG states as (tensors, JSON)."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np_keys.astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    info = {
        "numpy": {"kind": np_kind, "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    return tensors, info


def restore_rng_state(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states only when the same devices exist)."""
    torch.set_rng_state(tensors["rng/torch"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = info["numpy"]
    keys = tensors["rng/numpy"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = info["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_training_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the optimizer's state, the RNG states and `step` as ``path.safetensors`` + ``path.json``.

    Optimizer tensors become ``optimizer/<param index>/<name>`` (e.g. AdamW's ``exp_avg``);
    its param groups (lr, betas, ...) and any non-tensor state go to the JSON.
    """
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{idx}/{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                plain_state.setdefault(str(idx), {})[name] = _encode(value, f"optimizer.state.{idx}.{name}")
    rng_tensors, rng_info = capture_rng_state()
    tensors.update(rng_tensors)
    meta = {
        "format": STATE_FORMAT,
        "step": int(step),
        "optimizer": {
            "class": _class_path(optimizer),
            "param_groups": _encode(opt["param_groups"], "optimizer.param_groups"),
            "plain_state": plain_state,
        },
        "rng": rng_info,
        "extra": _encode(extra or {}, "extra"),
    }
    _atomic_save_tensors(tensors, stem.with_suffix(".safetensors"), metadata={"format": STATE_FORMAT})
    _atomic_write_json(meta, stem.with_suffix(".json"))
    return stem


def load_training_state(
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what `save_training_state` wrote into `optimizer` (and the RNGs); return the JSON part
    (``step``, ``extra``)."""
    stem = _stem(path)
    json_path, st_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for p in (json_path, st_path):
        if not p.is_file():
            raise FileNotFoundError(f"training state {p} not found")
    meta = _read_json_bytes(json_path.read_bytes(), json_path)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{json_path} is not a training state")
    tensors = _tensors_from_bytes(st_path.read_bytes(), st_path)
    if optimizer is not None:
        if meta["optimizer"]["class"] != _class_path(optimizer):
            raise ValueError(
                f"training state holds a {meta['optimizer']['class']} state, not a {_class_path(optimizer)} one"
            )
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, idx, name = key.split("/", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, entry in meta["optimizer"]["plain_state"].items():
            state.setdefault(int(idx), {}).update({k: _decode(v) for k, v in entry.items()})
        groups = _decode(meta["optimizer"]["param_groups"])
        want = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
        got = [len(g["params"]) for g in groups]
        if want != got:
            raise CheckpointMismatchError(
                f"optimizer state has param groups of sizes {got}, the optimizer has {want}"
            )
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if restore_rng:
        restore_rng_state({k: v for k, v in tensors.items() if k.startswith("rng/")}, meta["rng"])
    meta["extra"] = _decode(meta.get("extra", {}))
    return meta
