"""Checkpoints: safetensors for tensors, JSON for everything else, sha256 for shipped files.

A checkpoint called ``name`` is two files side by side:

* ``name.safetensors`` — the model's ``state_dict`` (weights and persistent buffers), in the
  safetensors format: a header and raw tensor bytes, so loading it cannot run code
  (unlike ``pickle``/``torch.load``).
* ``name.json`` — the model's typed config (a dataclass) as JSON with its class name, so the
  model can be rebuilt before its weights are loaded, plus free-form metadata.

Training state (optimizer moments, RNG states, step) is stored the same way: its tensors
flattened into a safetensors file, the rest in JSON. Nothing here pickles.

Loading checks before it copies: a file whose tensor names or shapes disagree with the model
built from its config is refused with a message that names every missing, unexpected or
mis-shaped tensor. Shipped weights (``data/weights/``) are listed with their SHA-256 in
``MANIFEST.json`` and checked before loading (`load_pretrained`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .paths import data_dir

__all__ = [
    "CheckpointMismatchError",
    "config_to_dict",
    "config_from_dict",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_json",
    "save_training_state",
    "load_training_state",
    "capture_rng_state",
    "restore_rng_state",
    "sha256_file",
    "write_manifest",
    "verify_manifest",
    "load_pretrained",
]

FORMAT = "dalle-mini-core/checkpoint/v1"
STATE_FORMAT = "dalle-mini-core/train-state/v1"


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model they are loaded into."""


# ---------------------------------------------------------------------------------------------
# 1. Config <-> JSON. JSON has no tuples and no classes, so both are tagged explicitly:
#    a tuple is {"__tuple__": [...]}, a nested dataclass is {"__dataclass__": "mod.Cls", ...}.
# ---------------------------------------------------------------------------------------------


def _class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": _class_path(value), "fields": _encode_fields(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"config field {where}: dict keys must be str to store as JSON")
        return {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(
        f"config field {where} holds a {type(value).__name__}, which has no JSON form; "
        "use None/bool/int/float/str, tuples, lists, dicts or nested dataclasses"
    )


def _encode_fields(config: Any) -> dict[str, Any]:
    return {f.name: _encode(getattr(config, f.name), f.name) for f in dataclasses.fields(config) if f.init}


def _import_object(path: str) -> Any:
    """Import ``package.module.Name`` (the longest importable module prefix wins)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
            return obj
        except AttributeError:
            break
    raise ImportError(f"cannot import {path!r}; pass the class explicitly (config_cls=...)")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__dataclass__" in value:
            return _build_dataclass(_import_object(value["__dataclass__"]), value["fields"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _build_dataclass(cls: type, fields: dict[str, Any]) -> Any:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{_class_path(cls)} is not a dataclass; cannot rebuild a config from it")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"stored config has fields {unknown} that {cls.__qualname__} does not define")
    return cls(**{k: _decode(v) for k, v in fields.items()})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config → a JSON-ready dict ``{"class": "mod.Cls", "fields": {...}}``.

    Tuples and nested dataclasses survive the round trip (`config_from_dict`).
    """
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    return {"class": _class_path(config), "fields": _encode_fields(config)}


def config_from_dict(data: dict[str, Any], config_cls: type | None = None) -> Any:
    """Inverse of `config_to_dict`; `config_cls` overrides the stored class name."""
    if not isinstance(data, dict) or "fields" not in data or "class" not in data:
        raise ValueError("expected a dict with 'class' and 'fields' (made by config_to_dict)")
    cls = config_cls if config_cls is not None else _import_object(data["class"])
    return _build_dataclass(cls, data["fields"])


# ---------------------------------------------------------------------------------------------
# 2. Model checkpoints: name.safetensors + name.json
# ---------------------------------------------------------------------------------------------


def _stem(path: str | os.PathLike) -> Path:
    """``run/model``, ``run/model.safetensors`` and ``run/model.json`` all name ``run/model``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _tensors_for_saving(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses tensors that share memory, e.g. tied weights)."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any | None = None,
    *,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``path.safetensors`` (the model's state_dict) and ``path.json`` (config + metadata).

    `config` is the dataclass the model was built from (None for a model without one);
    `extra` is any JSON-ready metadata (step, dataset, metrics...); `dtype` optionally casts
    floating tensors (e.g. ``torch.bfloat16`` to halve shipped files). Returns the stem path.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = _tensors_for_saving(model.state_dict(), dtype)
    meta = {
        "format": FORMAT,
        "model_class": _class_path(model),
        "config": None if config is None else config_to_dict(config),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "torch": torch.__version__,
        "extra": _encode(extra or {}, "extra"),
    }
    _atomic_save_tensors(tensors, stem.with_suffix(".safetensors"), metadata={"format": FORMAT})
    _atomic_write_json(meta, stem.with_suffix(".json"))
    return stem


def read_checkpoint_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON half of a checkpoint (config dict, metadata, `extra` decoded)."""
    json_path = _stem(path).with_suffix(".json")
    if not json_path.is_file():
        raise FileNotFoundError(f"checkpoint config {json_path} not found")
    meta = json.loads(json_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a dalle-mini-core checkpoint (format {meta.get('format')!r})")
    meta["extra"] = _decode(meta.get("extra", {}))
    return meta


def _file_shapes(st_path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(st_path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _check_tensors(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise CheckpointMismatchError naming every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or misshaped):
        return

    def listing(names: list[str], fmt: Callable[[str], str] = str) -> str:
        shown = ", ".join(fmt(n) for n in names[:10])
        return shown + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")

    lines = [f"{source} does not match the model:"]
    if missing:
        lines.append(f"  missing from the file ({len(missing)}): {listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected in the file ({len(unexpected)}): {listing(unexpected)}")
    if misshaped:
        lines.append(
            f"  wrong shape ({len(misshaped)}): "
            + listing(misshaped, lambda k: f"{k} file {list(found[k])} vs model {list(expected[k])}")
        )
    lines.append("Was it saved from a different config or model class?")
    raise CheckpointMismatchError("\n".join(lines))


def load_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Check ``path.safetensors`` against `model`'s state_dict, then copy it in (strict)."""
    st_path = _stem(path).with_suffix(".safetensors")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {st_path} not found")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_tensors(expected, _file_shapes(st_path), str(st_path))
    model.load_state_dict(load_file(str(st_path)), strict=True)
    return model


def load_checkpoint(
    path: str | os.PathLike,
    build: Callable[..., nn.Module],
    *,
    config_cls: type | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Rebuild a model from ``path.json`` and load ``path.safetensors`` into it.

    `build` is the model class or any function ``config -> nn.Module`` (called with no
    argument when the checkpoint has no config). The stored config class is imported by
    name unless `config_cls` is given. Raises CheckpointMismatchError when the tensors do not
    match the rebuilt model.
    """
    meta = read_checkpoint_json(path)
    config = None if meta["config"] is None else config_from_dict(meta["config"], config_cls)
    model = build() if config is None else build(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"build returned {type(model).__name__}, expected an nn.Module")
    load_weights(path, model)
    return model.to(device)


# ---------------------------------------------------------------------------------------------
# 3. Training state: optimizer moments and RNG states flattened to tensors, the rest JSON.
# ---------------------------------------------------------------------------------------------


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
    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{stem}.json is not a training state (format {meta.get('format')!r})")
    tensors = load_file(str(stem.with_suffix(".safetensors")))
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


# ---------------------------------------------------------------------------------------------
# 4. Shipped weights: SHA-256 manifest, load_pretrained
# ---------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike, files: list[str] | None = None) -> Path:
    """Write ``folder/MANIFEST.json`` = {file name: sha256} for `files` (default: every
    ``*.safetensors`` and ``*.json`` in the folder except the manifest)."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".json") and p.name != "MANIFEST.json"
        )
    manifest = {name: sha256_file(folder / name) for name in files}
    path = folder / "MANIFEST.json"
    _atomic_write_json(manifest, path)
    return path


def verify_manifest(manifest_path: str | os.PathLike, files: list[str] | None = None) -> dict[str, str]:
    """Check files against ``MANIFEST.json`` ({file: sha256}, paths relative to its folder).

    Checks every listed file, or only `files`. Raises FileNotFoundError for a missing file or
    one the manifest does not list, ValueError for a hash mismatch; returns the manifest.
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"manifest {manifest_path} not found")
    manifest = json.loads(manifest_path.read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path} must hold a JSON object {{file: sha256}}")
    names = list(manifest) if files is None else files
    for name in names:
        if name not in manifest:
            raise FileNotFoundError(f"{name} is not listed in {manifest_path}; refusing to load an unverified file")
        target = manifest_path.parent / name
        if not target.is_file():
            raise FileNotFoundError(f"{target} is listed in {manifest_path} but missing")
        actual = sha256_file(target)
        if actual != manifest[name]:
            raise ValueError(
                f"{target} is corrupt or was changed: sha256 {actual[:16]}... but the manifest says "
                f"{str(manifest[name])[:16]}...; restore it (git checkout / re-download the repository)"
            )
    return manifest


def load_pretrained(
    name: str,
    build: Callable[..., nn.Module] | None = None,
    *,
    config_cls: type | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Load shipped weights ``data/weights/<name>.safetensors`` (+ ``.json``) after checking
    their SHA-256 against ``data/weights/MANIFEST.json``.

    `build` (model class or ``config -> nn.Module``) defaults to the model class recorded in
    the JSON, called with the stored config.
    """
    weights = data_dir() / "weights"
    st_path, json_path = weights / f"{name}.safetensors", weights / f"{name}.json"
    if not st_path.is_file() or not json_path.is_file():
        available = sorted(p.stem for p in weights.glob("*.safetensors")) if weights.is_dir() else []
        raise FileNotFoundError(
            f"no shipped weights named {name!r} in {weights} (available: {available or 'none'}); "
            "train them with the matching notebook, or check DALLE_MINI_DATA"
        )
    verify_manifest(weights / "MANIFEST.json", files=[st_path.name, json_path.name])
    if build is None:
        meta = read_checkpoint_json(st_path)
        build = _import_object(meta["model_class"])
        if not (isinstance(build, type) and issubclass(build, nn.Module)):
            raise TypeError(f"{meta['model_class']} is not an nn.Module class; pass build=...")
    return load_checkpoint(st_path, build, config_cls=config_cls, device=device)
