"""Model checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint called ``name`` is two files side by side:

* ``name.safetensors`` — the model's ``state_dict`` (weights and persistent buffers), in the
  safetensors format: a header and raw tensor bytes, so loading it cannot run code
  (unlike ``pickle``/``torch.load``). Its header also carries the model class name and the
  config, so the weights file alone says what it holds.
* ``name.json`` — the model's typed config (a dataclass) as JSON with its class name, so the
  model can be rebuilt before its weights are loaded, plus free-form metadata (``extra``).

**Loading is data-only.** The classes a checkpoint names are looked up in the registry of
`dalle_mini_core.registry`, never imported (`UnknownClassError` otherwise).

Loading checks before it copies: a file that is not a readable safetensors file, whose tensor
names or shapes disagree with the model built from its config, or that holds NaN/inf values is
refused with a one-line message that names the file (and every mismatched or non-finite tensor).

Saving is atomic: both files are written to temporary files first, then the weights file is
renamed into place (the commit point: it carries its own config) and then the JSON, so an
interrupted save leaves either the old checkpoint or the new one, never new weights read with an
old config. The JSON is strict (RFC 8259): a non-finite float is written as
``{"__float__": "nan"}`` (or ``"inf"``, ``"-inf"``) and read back as that float.

The neighbours of this module:

* `dalle_mini_core.registry` — the classes a file may name, and configs ↔ JSON;
* `dalle_mini_core.train_state` — optimizer moments, RNG states and the step, for exact resume;
* `dalle_mini_core.weights` — SHA-256 manifests, `load_pretrained` (the shipped weights) and
  `load_from_folder` (a folder you were given).

Their public names can also be imported from here (``from dalle_mini_core.checkpoints import
load_pretrained`` keeps working), but they live in those modules.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_tensors_from_bytes
from safetensors.torch import save_file
from torch import nn

from .registry import (
    UnknownClassError,
    _class_path,
    _decode,
    _encode,
    _short,
    config_from_dict,
    config_to_dict,
    json_dumps_strict,
    register,
    registered_classes,
    resolve_class,
)

__all__ = [
    "CheckpointMismatchError",
    "CheckpointWarning",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_safetensors",
    "read_checkpoint_json",
]

FORMAT = "dalle-mini-core/checkpoint/v1"
_EMBED_KEY = "dalle_mini_core.config"  # safetensors header metadata: {"model_class", "config"} as JSON
_MAX_HEADER = 100_000_000  # bytes; the safetensors format's own limit


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not match the model they are loaded into."""


class CheckpointWarning(UserWarning):
    """Something about a checkpoint worth knowing that does not stop it from loading."""


# ---------------------------------------------------------------------------------------------
# 1. Files: atomic writes, safetensors read from the exact bytes that were checked
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
# 2. Model checkpoints: name.safetensors + name.json
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
          *, check: Callable[[Path, bytes | None], None] | None = None) -> nn.Module:
    """Read the pair once, let `check` see the bytes (``check(path, data)``, data None for a missing
    JSON; `weights` checks them against a manifest), rebuild, check, copy."""
    st_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {st_path} not found")
    data = st_path.read_bytes()
    json_bytes = json_path.read_bytes() if json_path.is_file() else None
    if check is not None:
        check(st_path, data)
        check(json_path, json_bytes)
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
# Names that moved to the neighbouring modules, still importable from here.
# ---------------------------------------------------------------------------------------------

_MOVED = {
    **dict.fromkeys(("capture_rng_state", "restore_rng_state", "save_training_state", "load_training_state",
                     "STATE_FORMAT"), "train_state"),
    **dict.fromkeys(("UnverifiedWeightsWarning", "sha256_file", "write_manifest", "verify_manifest",
                     "load_pretrained", "load_from_folder"), "weights"),
}
# register, registered_classes, resolve_class, config_to_dict, config_from_dict, json_dumps_strict and
# UnknownClassError are imported from .registry above (this module uses them).
_REEXPORTED = (register, registered_classes, resolve_class, json_dumps_strict)


def __getattr__(name: str) -> Any:
    """``checkpoints.load_pretrained`` and the other moved names, from their modules (imported on first use:
    `train_state` and `weights` import this module, so they cannot be imported at its top)."""
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
