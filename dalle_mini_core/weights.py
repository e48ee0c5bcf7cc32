"""Shipped weights and weight folders: SHA-256 manifests, `load_pretrained`, `load_from_folder`.

Shipped weights (``data/weights/``) are listed with their SHA-256 in ``MANIFEST.json``, and
`load_pretrained` hashes exactly the bytes it then loads; their names are plain names, never
paths. `load_from_folder` does the same for a folder of weights you were given, and warns
(`UnverifiedWeightsWarning`) when the folder has no ``MANIFEST.json``. A manifest shows that
files are intact (no bit rot, no truncation), not who made them: a folder's author writes its
manifest too. `write_manifest` records a folder, `verify_manifest` checks one.

The files themselves are model checkpoints (`dalle_mini_core.checkpoints`): classes resolve
through the registry, tensors are checked against the model before they are copied.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoints import CheckpointWarning, _atomic_write_json, _load, _read_json_bytes
from .paths import data_dir
from .registry import _short

__all__ = [
    "UnverifiedWeightsWarning",
    "sha256_file",
    "write_manifest",
    "verify_manifest",
    "load_pretrained",
    "load_from_folder",
]


class UnverifiedWeightsWarning(CheckpointWarning):
    """Weights loaded from a folder without a ``MANIFEST.json``: no checksum was checked."""


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


def _manifest_check(manifest: dict[str, str], manifest_path: Path, hint: str = "") -> Callable[[Path, bytes | None], None]:
    """The ``check`` `checkpoints._load` runs on the bytes it read: each must match `manifest`; a
    missing file (``data`` None) only when the manifest does not list it."""

    def check(path: Path, data: bytes | None) -> None:
        if data is not None:
            _check_bytes(manifest, manifest_path, path.name, data, hint)
        elif path.name in manifest:
            raise FileNotFoundError(f"{path} is listed in {manifest_path} but missing")

    return check


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
    return _load(weights / name, build, config_cls, device, check=_manifest_check(manifest, manifest_path, _SHIPPED_HINT))


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
            "dalle_mini_core.weights.write_manifest(folder)"), stacklevel=2)
    return _load(folder / name, build, config_cls, device,
                 check=_manifest_check(manifest, manifest_path) if manifest is not None else None)
