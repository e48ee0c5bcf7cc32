"""The classes a stored file may name, and configs as JSON: the data-only half of loading.

A checkpoint names its classes (``"model_class"``, the config's ``"class"``, a nested config's
``"__dataclass__"``), but those names are looked up in a registry of this package's own config
and model classes (`registered_classes`), never imported: a name that is not registered is
refused with `UnknownClassError`, so a weights folder cannot make Python import or call
anything. The stored names are plain class names or the full names this package writes
(``"dalle_mini_core.clip.CLIPConfig"``), which map to the same registry entries. Your own
classes join with `register` (code you run, not data you load), or pass the class itself
(``build=``, ``config_cls=`` of `checkpoints.load_checkpoint`).

A typed config (a dataclass) becomes JSON with `config_to_dict` and comes back with
`config_from_dict`. JSON has no tuples, no classes and no NaN, so these are tagged: a tuple is
``{"__tuple__": [...]}``, a nested dataclass ``{"__dataclass__": "mod.Cls", "fields": {...}}``,
a non-finite float ``{"__float__": "nan" | "inf" | "-inf"}``. The JSON written is strict
(RFC 8259); `json_dumps_strict` writes reports the same way (NaN becomes ``null`` there).

`checkpoints` (model files), `train_state` (optimizer and RNG states) and `weights` (manifests)
store their configs and metadata through this module.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import typing
from typing import Any

from torch import nn

__all__ = [
    "UnknownClassError",
    "register",
    "registered_classes",
    "resolve_class",
    "config_to_dict",
    "config_from_dict",
    "json_dumps_strict",
]


class UnknownClassError(ValueError):
    """A checkpoint names a class that is not registered; it was not imported."""


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
            f"dalle_mini_core.registry.register(YourClass) first, or pass {how}"
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
