"""Checkpoints: safetensors for tensors, JSON for everything else, sha256 for shipped files.

A checkpoint called ``name`` is two files side by side:

* ``name.safetensors`` — the model's ``state_dict`` (weights and persistent buffers), in the
  safetensors format: a header and raw tensor bytes, so loading it cannot run code
  (unlike ``pickle``/``torch.load``). Its header also carries the model class name and the
  config, so the weights file alone says what it holds.
* ``name.json`` — the model's typed config (a dataclass) as JSON with its class name, so the
  model can be rebuilt before its weights are loaded, plus free-form metadata (``extra``).

Training state (optimizer moments, RNG states, step) is stored the same way: its tensors
flattened into a safetensors file, the rest in JSON. Nothing here pickles.

**Loading is data-only.** A checkpoint names its classes (``"model_class"``, the config's
``"class"``, a nested config's ``"__dataclass__"``), but those names are looked up in a
registry of this package's own config and model classes (`registered_classes`), never
imported: a name that is not registered is refused with `UnknownClassError`, so a weights
folder cannot make Python import or call anything. The stored names are plain class names or
the full names this package writes (``"dalle_mini_core.clip.CLIPConfig"``), which map to the
same registry entries. Your own classes join with `register` (code you run, not data you load),
or pass the class itself (``build=``, ``config_cls=``).

Loading checks before it copies: a file that is not a readable safetensors file, whose tensor
names or shapes disagree with the model built from its config, or that holds NaN/inf values is
refused with a one-line message that names the file (and every mismatched or non-finite
tensor). Shipped weights (``data/weights/``) are listed with their SHA-256 in ``MANIFEST.json``
and `load_pretrained` hashes exactly the bytes it then loads; their names are plain names, never
paths. `load_from_folder` does the same for a folder of weights you were given, and warns
(`UnverifiedWeightsWarning`) when the folder has no ``MANIFEST.json``. A manifest shows that
files are intact (no bit rot, no truncation), not who made them: a folder's author writes its
manifest too.

Saving is atomic: both files are written to temporary files first, then the weights file is
renamed into place (the commit point: it carries its own config) and then the JSON, so an
interrupted save leaves either the old checkpoint or the new one, never new weights read with an
old config. The JSON is strict (RFC 8259): a non-finite float is written as
``{"__float__": "nan"}`` (or ``"inf"``, ``"-inf"``) and read back as that float.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import os
import random
import re
import typing
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_tensors_from_bytes
from safetensors.torch import save_file
from torch import nn

from .paths import data_dir

__all__ = [
    "CheckpointMismatchError",
    "UnknownClassError",
    "CheckpointWarning",
    "UnverifiedWeightsWarning",
    "register",
    "registered_classes",
    "resolve_class",
    "config_to_dict",
    "config_from_dict",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_safetensors",
    "read_checkpoint_json",
    "save_training_state",
    "load_training_state",
    "capture_rng_state",
    "restore_rng_state",
    "sha256_file",
    "write_manifest",
    "verify_manifest",
    "load_pretrained",
    "load_from_folder",
    "json_dumps_strict",
]

FORMAT = "dalle-mini-core/checkpoint/v1"
STATE_FORMAT = "dalle-mini-core/train-state/v1"
_EMBED_KEY = "dalle_mini_core.config"  # safetensors header metadata: {"model_class", "config"} as JSON
_MAX_HEADER = 100_000_000  # bytes; the safetensors format's own limit


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model they are loaded into."""


class UnknownClassError(ValueError):
    """A checkpoint names a class that is not registered; it was not imported."""


class CheckpointWarning(UserWarning):
    """Something about a checkpoint worth knowing that does not stop it from loading."""


class UnverifiedWeightsWarning(CheckpointWarning):
    """Weights loaded from a folder without a ``MANIFEST.json``: no checksum was checked."""


# ---------------------------------------------------------------------------------------------
# 1. The registry: the only classes a checkpoint may name.
# ---------------------------------------------------------------------------------------------

#: This package's own classes, plain name -> (module inside this package, kind). A fixed table in
#: code: the module is imported only when its class is asked for by one of these names.
_BUILTIN_CLASSES: dict[str, tuple[str, str]] = {
    "CLIPConfig": ("clip", "config"),
    "PriorConfig": ("prior", "config"),
    "DecoderConfig": ("decoder", "config"),
    "UNetConfig": ("unet", "config"),
    "UpsamplerConfig": ("upsampler", "config"),
    "TrainConfig": ("train", "config"),
    "CLIPModel": ("clip", "model"),
    "DiffusionPrior": ("prior", "model"),
    "Decoder": ("decoder", "model"),
    "UNet": ("unet", "model"),
    "Upsampler": ("upsampler", "model"),
}
_PACKAGE = __name__.rpartition(".")[0]
_REGISTERED: dict[str, type] = {}  # plain name -> class (built-ins once imported, and register()ed ones)


def _kind_of(cls: Any) -> str | None:
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        return "config"
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        return "model"
    return None


def _lookup(plain: str) -> type | None:
    if plain in _REGISTERED:
        return _REGISTERED[plain]
    if plain not in _BUILTIN_CLASSES:
        return None
    module, _ = _BUILTIN_CLASSES[plain]
    cls = getattr(importlib.import_module(f"{_PACKAGE}.{module}"), plain)
    _REGISTERED[plain] = cls
    return cls


def register(cls: type) -> type:
    """Let checkpoints name `cls`, a config dataclass or an ``nn.Module`` subclass of your own.

    Looked up by its plain name (``cls.__name__``) or the full name checkpoints store. Usable
    as a decorator; returns `cls`. Names are unique: a different class under a taken name
    raises ValueError.
    """
    if _kind_of(cls) is None:
        raise TypeError(f"only config dataclasses and nn.Module subclasses can be registered, got {cls!r}")
    name = cls.__name__
    taken = _lookup(name)
    if taken is not None and taken is not cls:
        raise ValueError(f"a class named {name!r} is already registered ({_class_path(taken)}); rename yours")
    _REGISTERED[name] = cls
    return cls


def registered_classes(kind: str | None = None) -> dict[str, type]:
    """The classes checkpoints may name, plain name -> class (`kind`: "config", "model" or None for both)."""
    if kind not in (None, "config", "model"):
        raise ValueError(f"kind must be 'config', 'model' or None, got {kind!r}")
    every = {name: _lookup(name) for name in sorted(set(_BUILTIN_CLASSES) | set(_REGISTERED))}
    return {n: c for n, c in every.items() if c is not None and (kind is None or _kind_of(c) == kind)}


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def resolve_class(name: Any, kind: str, *, source: str | os.PathLike = "a checkpoint") -> type:
    """The registered class a checkpoint calls `name` (kind "config" or "model"); never imports.

    `name` is a plain class name (``"CLIPConfig"``) or the full name checkpoints store
    (``"dalle_mini_core.clip.CLIPConfig"``), which must match the registered class exactly.
    Anything else raises `UnknownClassError`, a one-line ValueError naming `source` and `name`.
    """
    if kind not in ("config", "model"):
        raise ValueError(f"kind must be 'config' or 'model', got {kind!r}")
    cls = None
    if isinstance(name, str) and name:
        plain = name.rpartition(".")[2]
        found = _lookup(plain) if plain.isidentifier() else None
        if found is not None and name in (plain, _class_path(found)) and _kind_of(found) == kind:
            cls = found
    if cls is None:
        known = ", ".join(registered_classes(kind))
        shown = _short(name) if isinstance(name, str) else name
        how = "config_cls=..." if kind == "config" else "build=..."
        raise UnknownClassError(
            f"{source} names the {kind} class {shown!r}, which is not one of the registered {kind} classes "
            f"({known}); loading never imports what a file names. For a class of your own, call "
            f"dalle_mini_core.checkpoints.register(YourClass) first, or pass {how}"
        )
    return cls


# ---------------------------------------------------------------------------------------------
# 2. Config <-> JSON. JSON has no tuples, no classes and no NaN, so these are tagged explicitly:
#    a tuple is {"__tuple__": [...]}, a nested dataclass {"__dataclass__": "mod.Cls", "fields":
#    {...}}, a non-finite float {"__float__": "nan" | "inf" | "-inf"}.
# ---------------------------------------------------------------------------------------------


def _class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
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


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _field_classes(cls: type) -> dict[str, list[type]]:
    """For each field of dataclass `cls`, the dataclasses its type annotation names (code, not data)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated: fall back to the registry alone
        return {}
    out: dict[str, list[type]] = {}
    for name, hint in hints.items():
        options = typing.get_args(hint) if typing.get_args(hint) and typing.get_origin(hint) is not None else (hint,)
        found = [t for t in options if isinstance(t, type) and dataclasses.is_dataclass(t)]
        if found:
            out[name] = found
    return out


def _decode(value: Any, source: str | os.PathLike = "a checkpoint", *, strict: bool = True,
            expected: list[type] | None = None) -> Any:
    """JSON value -> Python value. `strict`: an unknown ``__dataclass__`` name raises
    UnknownClassError (configs); otherwise it stays the plain dict it is (metadata)."""
    if isinstance(value, list):
        return [_decode(v, source, strict=strict) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v, source, strict=strict) for v in value["__tuple__"])
        if set(value) == {"__float__"} and value["__float__"] in _FLOATS:
            return _FLOATS[value["__float__"]]
        if "__dataclass__" in value:
            name = value["__dataclass__"]
            cls = next((c for c in expected or () if name in (c.__name__, _class_path(c))), None)
            try:
                cls = cls or resolve_class(name, "config", source=source)
                return _build_dataclass(cls, value.get("fields"), source)
            except (ValueError, TypeError):  # UnknownClassError included
                if strict:
                    raise
                return {k: _decode(v, source, strict=False) for k, v in value.items()}
        return {k: _decode(v, source, strict=strict) for k, v in value.items()}
    return value


def _build_dataclass(cls: type, fields: Any, source: str | os.PathLike = "a checkpoint") -> Any:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{_class_path(cls)} is not a dataclass; cannot rebuild a config from it")
    if not isinstance(fields, dict):
        raise ValueError(f"{source}: the fields of {cls.__name__} must be a JSON object, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"stored config has fields {unknown} that {cls.__qualname__} does not define")
    nested = _field_classes(cls)
    return cls(**{k: _decode(v, source, expected=nested.get(k)) for k, v in fields.items()})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config → a JSON-ready dict ``{"class": "mod.Cls", "fields": {...}}``.

    Tuples, nested dataclasses and non-finite floats survive the round trip (`config_from_dict`).
    """
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    return {"class": _class_path(config), "fields": _encode_fields(config)}


def config_from_dict(data: dict[str, Any], config_cls: type | None = None, *,
                     source: str | os.PathLike = "config") -> Any:
    """Inverse of `config_to_dict`. The stored class name is looked up in the registry
    (`resolve_class`), never imported; `config_cls` overrides it. A nested config's class comes
    from the field's annotation when that names it, else from the registry. `source` names the
    file in error messages."""
    if not isinstance(data, dict) or "fields" not in data or "class" not in data:
        raise ValueError(f"{source}: expected a config as a dict with 'class' and 'fields' (made by config_to_dict)")
    cls = config_cls if config_cls is not None else resolve_class(data["class"], "config", source=source)
    return _build_dataclass(cls, data["fields"], source)


def json_dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` whose text every JSON parser accepts: NaN and ±inf become ``null``
    (`allow_nan=False` guards the rest). For reports; checkpoints keep the exact value instead."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), allow_nan=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# 3. Files: atomic writes, safetensors read from the exact bytes that were checked
# ---------------------------------------------------------------------------------------------


def _stem(path: str | os.PathLike) -> Path:
    """``run/model``, ``run/model.safetensors`` and ``run/model.json`` all name ``run/model``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk; a no-op where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_text(obj: Any, **kwargs: Any) -> str:
    return json.dumps(obj, allow_nan=False, **kwargs)  # strict JSON: _encode has tagged every NaN


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_text(tmp, _json_text(obj, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _tensors_for_saving(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses tensors that share memory, e.g. tied weights)."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()
    return out


def _unreadable(source: Path, why: str) -> ValueError:
    return ValueError(f"{source} is not a readable safetensors file ({why}): it is truncated, corrupt or in "
                      "another format; re-download or re-train it")


def _parse_header(data: bytes, source: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and ``__metadata__`` from safetensors bytes, or a one-line ValueError."""
    if len(data) < 8:
        raise _unreadable(source, f"{len(data)} bytes, shorter than any header")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > _MAX_HEADER:
        raise _unreadable(source, f"its header claims {n} bytes, the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n])
        metadata = header.pop("__metadata__", None) or {}
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _unreadable(source, f"bad header: {_short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _unreadable(source, "bad header metadata")
    return shapes, metadata


def _tensors_from_bytes(data: bytes, source: Path) -> dict[str, torch.Tensor]:
    try:
        return _load_tensors_from_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise _unreadable(source, _short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None


def _check_finite(tensors: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """Refuse NaN/inf weights, naming the tensors (a corrupt file, or a model that diverged)."""
    bad = {}
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        # A sum is finite exactly when every term is (NaN and inf propagate; float32 cannot overflow
        # on float16 terms, float64 not on float32/bfloat16 ones), and it is several times faster
        # than isfinite on half precision; the exact count is taken only for a tensor that fails.
        acc = torch.float32 if t.dtype == torch.float16 else torch.float64
        if not math.isfinite(float(t.sum(dtype=acc))):
            bad[name] = int((~torch.isfinite(t)).sum())
    if bad:
        first = list(bad)[:3]
        listing = ", ".join(f"{k!r} ({bad[k]} values)" for k in first) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(f"{source} holds NaN/inf weights in {len(bad)} tensor(s): {listing}; the file is corrupt "
                         "or comes from a run that diverged; refusing to load it")


def _read_json_bytes(data: bytes, source: str | os.PathLike) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source} is not valid JSON ({_short(str(exc))})") from None


# ---------------------------------------------------------------------------------------------
# 4. Model checkpoints: name.safetensors + name.json
# ---------------------------------------------------------------------------------------------


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

    The pair is written as one unit: both files go to temporary files first; the weights file,
    which carries the model class and config in its header, is renamed into place, then the
    JSON. An interrupted save leaves the old checkpoint, or the new weights with their own
    config (`load_checkpoint` prefers it to a JSON left behind, with a `CheckpointWarning`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = _tensors_for_saving(model.state_dict(), dtype)
    record = {"model_class": _class_path(model), "config": None if config is None else config_to_dict(config)}
    meta = {
        "format": FORMAT,
        **record,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "torch": torch.__version__,
        "extra": _encode(extra or {}, "extra"),
    }
    json_text = _json_text(meta, indent=2, sort_keys=False) + "\n"
    # One metadata key only: safetensors keeps the header's metadata in a hash map whose order
    # changes from process to process, so two keys would make identical checkpoints differ in bytes.
    header = {_EMBED_KEY: _json_text(record, sort_keys=True, separators=(",", ":"))}
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    st_tmp, json_tmp = st_path.with_name(st_path.name + ".tmp"), json_path.with_name(json_path.name + ".tmp")
    try:
        save_file(tensors, str(st_tmp), metadata=header)
        _fsync(st_tmp)
        _write_text(json_tmp, json_text)
        os.replace(st_tmp, st_path)  # the commit point: these weights carry their own config
        os.replace(json_tmp, json_path)
        _fsync(stem.parent)
    finally:
        st_tmp.unlink(missing_ok=True)
        json_tmp.unlink(missing_ok=True)
    return stem


def _merge_meta(json_bytes: bytes | None, header_meta: dict[str, str], json_path: Path, st_path: Path) -> dict[str, Any]:
    """The checkpoint's metadata: the JSON file, with the model class and config the weights
    file carries (if it does) taking precedence; `extra` decoded."""
    meta = None
    if json_bytes is not None:
        meta = _read_json_bytes(json_bytes, json_path)
        if not isinstance(meta, dict):
            raise ValueError(f"{json_path} must hold a JSON object (a dalle-mini-core checkpoint), got {type(meta).__name__}")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{json_path} is not a dalle-mini-core checkpoint (format {_short(repr(meta.get('format')))})")
    if _EMBED_KEY in header_meta:
        record = _read_json_bytes(header_meta[_EMBED_KEY].encode(), f"{st_path} (the config in its header)")
        if not (isinstance(record, dict) and set(record) == {"model_class", "config"}):
            raise ValueError(f"{st_path}: the config in its header must be an object with 'model_class' and 'config'")
        if meta is None:
            meta = {"format": FORMAT, "extra": {}, **record}
        elif {k: meta.get(k) for k in record} != record:
            warnings.warn(CheckpointWarning(
                f"{json_path} does not match the config stored in {st_path.name} (a save interrupted between "
                "the two files, or an edited JSON); using the one stored with the weights"), stacklevel=4)
            meta.update(record)
    elif meta is None:
        raise FileNotFoundError(f"checkpoint config {json_path} not found")
    for key in ("model_class", "config"):
        meta.setdefault(key, None)
    if meta["config"] is not None and not isinstance(meta["config"], dict):
        raise ValueError(f"{json_path}: 'config' must be null or an object with 'class' and 'fields'")
    meta["extra"] = _decode(meta.get("extra", {}), json_path, strict=False)
    return meta


def read_checkpoint_json(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata: the JSON half (config dict, `model_class`, `extra` decoded), with
    the model class and config stored in the weights file's header when it has them."""
    stem = _stem(path)
    json_path, st_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    header_meta: dict[str, str] = {}
    if st_path.is_file():
        with open(st_path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            head += f.read(n) if 0 < n <= _MAX_HEADER else b""
        try:
            header_meta = _parse_header(head, st_path)[1]
        except ValueError:
            if not json_path.is_file():
                raise
    if not json_path.is_file() and _EMBED_KEY not in header_meta:
        raise FileNotFoundError(f"checkpoint config {json_path} not found")
    json_bytes = json_path.read_bytes() if json_path.is_file() else None
    return _merge_meta(json_bytes, header_meta, json_path, st_path)


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


def _copy_into(model: nn.Module, data: bytes, st_path: Path, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_tensors(expected, shapes, str(st_path))
    tensors = _tensors_from_bytes(data, st_path)
    _check_finite(tensors, st_path)
    model.load_state_dict(tensors, strict=True)
    return model


def load_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Check ``path.safetensors`` against `model`'s state_dict, then copy it in (strict).

    Refuses (ValueError naming the file) a file that is not readable safetensors, whose tensors
    do not match (`CheckpointMismatchError`), or that holds NaN/inf values.
    """
    st_path = _stem(path).with_suffix(".safetensors")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {st_path} not found")
    data = st_path.read_bytes()
    return _copy_into(model, data, st_path, _parse_header(data, st_path)[0])


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU), or a one-line ValueError naming the file
    when it is not readable safetensors or holds NaN/inf values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    data = path.read_bytes()
    _parse_header(data, path)
    tensors = _tensors_from_bytes(data, path)
    _check_finite(tensors, path)
    return tensors


def _call_build(build: Callable[..., nn.Module], config: Any, source: Path) -> nn.Module:
    if config is None:
        try:
            inspect.signature(build).bind()
        except TypeError:
            raise ValueError(f"{source} stores no config (\"config\": null), but "
                             f"{getattr(build, '__name__', 'build')} needs one") from None
        except ValueError:  # no signature to inspect (a builtin): just call it
            pass
        model = build()
    else:
        model = build(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"build returned {type(model).__name__}, expected an nn.Module")
    return model


def _load(stem: Path, build: Callable[..., nn.Module] | None, config_cls: type | None, device: torch.device | str,
          *, manifest: dict[str, str] | None = None, manifest_path: Path | None = None, hint: str = "") -> nn.Module:
    """Read the pair once, check the bytes against `manifest` (if any), rebuild, check, copy."""
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {st_path} not found")
    data = st_path.read_bytes()
    json_bytes = json_path.read_bytes() if json_path.is_file() else None
    if manifest is not None:
        assert manifest_path is not None
        _check_bytes(manifest, manifest_path, st_path.name, data, hint)
        if json_bytes is not None:
            _check_bytes(manifest, manifest_path, json_path.name, json_bytes, hint)
        elif json_path.name in manifest:
            raise FileNotFoundError(f"{json_path} is listed in {manifest_path} but missing")
    shapes, header_meta = _parse_header(data, st_path)
    meta = _merge_meta(json_bytes, header_meta, json_path, st_path)
    source = json_path if json_bytes is not None else st_path
    config = None
    if meta["config"] is not None:
        try:
            config = config_from_dict(meta["config"], config_cls, source=source)
        except UnknownClassError:
            raise
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: its config cannot be rebuilt: {_short(str(exc), 300)}") from None
    if build is None:
        build = resolve_class(meta["model_class"], "model", source=source)
    model = _call_build(build, config, source)
    return _copy_into(model, data, st_path, shapes).to(device)


def load_checkpoint(
    path: str | os.PathLike,
    build: Callable[..., nn.Module] | None = None,
    *,
    config_cls: type | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Rebuild a model from ``path.json`` and load ``path.safetensors`` into it.

    `build` is the model class or any function ``config -> nn.Module`` (called with no
    argument when the checkpoint has no config); None takes the stored model class from the
    registry. The stored config class is looked up in the registry (`resolve_class`) unless
    `config_cls` is given; nothing named in the files is imported. Raises CheckpointMismatchError
    when the tensors do not match the rebuilt model, UnknownClassError for an unregistered class
    name, ValueError for an unreadable file or NaN/inf weights. No manifest is checked here: use
    `load_from_folder` for weights you were given.
    """
    return _load(_stem(path), build, config_cls, device)


# ---------------------------------------------------------------------------------------------
# 5. Training state: optimizer moments and RNG states flattened to tensors, the rest JSON.
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


# ---------------------------------------------------------------------------------------------
# 6. Shipped weights and weight folders: SHA-256 manifest, load_pretrained, load_from_folder
# ---------------------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_SHIPPED_HINT = "restore it (git checkout / re-download the repository)"
_FOLDER_HINT = ("the file is corrupt, or the folder changed after its manifest was written (an interrupted "
                "training run?); re-download or re-train it")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _is_file_name(name: Any) -> bool:
    """A bare file name inside one folder: no separator, not '.', '..' or absolute."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name and Path(name).name == name)


def _check_weights_name(name: Any) -> str:
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValueError(
            f"weights name must be a plain name such as 'shapes_decoder' (letters, digits, '_' and '-'; no folder, "
            f"no suffix), got {_short(repr(name))}; to load files from another folder use "
            "load_from_folder(folder, name) or UnCLIP.from_pretrained(folder=...)"
        )
    return name


def write_manifest(folder: str | os.PathLike, files: list[str] | None = None) -> Path:
    """Write ``folder/MANIFEST.json`` = {file name: sha256} for `files` (default: every
    ``*.safetensors`` and ``*.json`` in the folder except the manifest)."""
    folder = Path(folder)
    if files is None:
        files = sorted(
            p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".json") and p.name != "MANIFEST.json"
        )
    bad = [f for f in files if not _is_file_name(f)]
    if bad:
        raise ValueError(f"manifest entries must be file names inside {folder}, got {bad}")
    manifest = {name: sha256_file(folder / name) for name in files}
    path = folder / "MANIFEST.json"
    _atomic_write_json(manifest, path)
    return path


def _read_manifest(manifest_path: Path) -> dict[str, str]:
    if not manifest_path.is_file():
        raise FileNotFoundError(f"manifest {manifest_path} not found")
    manifest = _read_json_bytes(manifest_path.read_bytes(), manifest_path)
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise ValueError(f"{manifest_path} must hold a JSON object {{file name: sha256}}")
    bad = [k for k in manifest if not _is_file_name(k)]
    if bad:
        raise ValueError(f"{manifest_path} lists {_short(repr(bad[0]))}, which is not a file name in its folder")
    return manifest


def _check_bytes(manifest: dict[str, str], manifest_path: Path, name: str, data: bytes, hint: str) -> None:
    """`data` (the bytes about to be used) must hash to the manifest's entry for `name`."""
    if name not in manifest:
        raise FileNotFoundError(f"{name} is not listed in {manifest_path}; refusing to load an unverified file")
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest[name]:
        raise ValueError(
            f"{manifest_path.parent / name} is corrupt or was changed: sha256 {actual[:16]}... but the manifest says "
            f"{_short(manifest[name], 16)}...; {hint or _FOLDER_HINT}"
        )


def verify_manifest(manifest_path: str | os.PathLike, files: list[str] | None = None) -> dict[str, str]:
    """Check files against ``MANIFEST.json`` ({file name: sha256} for files in its folder).

    Checks every listed file, or only `files` (bare file names). Raises FileNotFoundError for a
    missing file or one the manifest does not list, ValueError for a hash mismatch or a name
    that is not a file name in the manifest's folder; returns the manifest.
    """
    manifest_path = Path(manifest_path)
    manifest = _read_manifest(manifest_path)
    names = list(manifest) if files is None else files
    for name in names:
        if not _is_file_name(name):
            raise ValueError(f"{_short(repr(name))} is not a file name in {manifest_path.parent}")
        if name not in manifest:
            raise FileNotFoundError(f"{name} is not listed in {manifest_path}; refusing to load an unverified file")
        target = manifest_path.parent / name
        if not target.is_file():
            raise FileNotFoundError(f"{target} is listed in {manifest_path} but missing")
        actual = sha256_file(target)
        if actual != manifest[name]:
            raise ValueError(
                f"{target} is corrupt or was changed: sha256 {actual[:16]}... but the manifest says "
                f"{manifest[name][:16]}...; restore it (git checkout / re-download the repository)"
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

    `name` is a plain name (``"shapes_decoder"``), never a path. The bytes that are hashed are the
    bytes that are loaded. `build` (model class or ``config -> nn.Module``) defaults to the
    registered model class the JSON names, called with the stored config.
    """
    _check_weights_name(name)
    weights = data_dir() / "weights"
    st_path, json_path = weights / f"{name}.safetensors", weights / f"{name}.json"
    if not st_path.is_file() or not json_path.is_file():
        available = sorted(p.stem for p in weights.glob("*.safetensors")) if weights.is_dir() else []
        raise FileNotFoundError(
            f"no shipped weights named {name!r} in {weights} (available: {available or 'none'}); "
            "train them with the matching notebook, or check DALLE_MINI_DATA"
        )
    manifest_path = weights / "MANIFEST.json"
    manifest = _read_manifest(manifest_path)
    if json_path.name not in manifest:
        raise FileNotFoundError(f"{json_path.name} is not listed in {manifest_path}; refusing to load an unverified file")
    return _load(weights / name, build, config_cls, device, manifest=manifest, manifest_path=manifest_path,
                 hint=_SHIPPED_HINT)


def load_from_folder(
    folder: str | os.PathLike,
    name: str,
    build: Callable[..., nn.Module] | None = None,
    *,
    config_cls: type | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Load ``folder/<name>.safetensors`` (+ ``.json``), e.g. a folder from ``dalle-mini train``
    or one you were given.

    `name` is a plain name. With a ``folder/MANIFEST.json`` both files must be listed and their
    bytes (the ones then loaded) must match; without one they load unchecked, with an
    `UnverifiedWeightsWarning`. Classes resolve through the registry as in `load_checkpoint`.
    """
    _check_weights_name(name)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"weights folder {folder} not found")
    manifest_path = folder / "MANIFEST.json"
    manifest = None
    if manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
    else:
        warnings.warn(UnverifiedWeightsWarning(
            f"{folder} has no MANIFEST.json, so its weights are loaded without a checksum (a truncated or changed "
            "file can load and draw wrong pictures); if you trust the files, record them with "
            "dalle_mini_core.checkpoints.write_manifest(folder)"), stacklevel=2)
    return _load(folder / name, build, config_cls, device, manifest=manifest,
                 manifest_path=manifest_path if manifest is not None else None)
