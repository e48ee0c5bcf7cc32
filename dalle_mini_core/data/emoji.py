"""The emoji dataset: 1,870 Noto Color Emoji at 64×64 with their Unicode names as captions.

The arrays ship in ``data/emoji/emoji.npz`` (built by ``scripts/build_emoji.py``; see
``data/emoji/DATASHEET.md`` for how, and ``LICENSE-emoji.txt`` for the licences). On first
load the file's SHA-256 is checked against ``MANIFEST.json`` so a truncated download or a
stale file fails loudly instead of training on the wrong pictures.

An item is ``(image, caption)``: image a float tensor (3, H, W) in [-1, 1] (H = 64, or 32 by
2×2 area averaging), caption the cleaned Unicode name ("grinning face with big eyes"),
optionally inside a template ("an emoji of grinning face with big eyes") chosen from
(seed, emoji index) so the same seed always gives the same captions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..paths import data_dir

__all__ = ["EmojiDataset", "DataIntegrityError", "TEMPLATES", "SPLITS", "load_emoji_arrays", "with_article"]

SPLITS = ("train", "val", "test", "all")
TEMPLATES = (
    "{name}",
    "an emoji of {name}",
    "{a} {name} emoji",
    "{name} emoji",
    "a picture of {name}",
)
REBUILD = (
    "rebuild it with `apt-get install -y fonts-noto-color-emoji unicode-data && "
    "python scripts/build_emoji.py`, or restore data/emoji/ from the repository (git checkout data/emoji)"
)
_ARRAYS = ("images", "codepoints", "names", "captions", "groups", "subgroups", "splits")
_CACHE: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}  # (path, size, mtime) -> arrays


class DataIntegrityError(RuntimeError):
    """A shipped data file does not match the checksum recorded in its MANIFEST.json."""


def with_article(name: str) -> str:
    """'a' or 'an' for a name, by its first letter ('an apple', 'a red apple')."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_emoji_arrays(root: str | Path | None = None) -> dict[str, np.ndarray]:
    """The verified arrays of ``emoji.npz`` in ``root`` (default ``data_dir()/emoji``), cached.

    Raises FileNotFoundError when the npz or its MANIFEST.json is missing and
    DataIntegrityError when the checksum or the array shapes do not match the manifest.
    """
    folder = Path(root) if root is not None else data_dir() / "emoji"
    npz, manifest_path = folder / "emoji.npz", folder / "MANIFEST.json"
    for path in (npz, manifest_path):
        if not path.is_file():
            raise FileNotFoundError(f"emoji dataset file {path} is missing; {REBUILD}")
    stat = npz.stat()
    key = (str(npz.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]

    # 1. checksum against the manifest
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataIntegrityError(f"{manifest_path} is not valid JSON ({exc}); {REBUILD}") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    entry = files.get("emoji.npz") if isinstance(files, dict) else None
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if expected is None:
        raise DataIntegrityError(f"{manifest_path} records no sha256 for emoji.npz; {REBUILD}")
    actual = _sha256(npz)
    if actual != expected:
        raise DataIntegrityError(
            f"{npz} has sha256 {actual[:16]}..., but {manifest_path} expects {expected[:16]}... "
            f"(corrupted, truncated or stale file); {REBUILD}"
        )

    # 2. load (no pickles) and check shapes
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in _ARRAYS}
    for name, arr in arrays.items():
        recorded = manifest.get("arrays")
        recorded = recorded.get(name) if isinstance(recorded, dict) else None
        shape = recorded.get("shape") if isinstance(recorded, dict) else None
        if list(arr.shape) != shape:
            raise DataIntegrityError(f"{npz}: array {name!r} has shape {arr.shape}, manifest says {shape}")
    _CACHE[key] = arrays
    return arrays


class EmojiDataset(Dataset):
    """Emoji images with caption strings; ``ds[i] -> (image (3, S, S) in [-1, 1], caption)``.

    Args:
        split: "train" (1,693), "val" (95), "test" (82) or "all" (1,870); the split is fixed by
            a hash of the Unicode name (DATASHEET.md).
        image_size: 64 (as shipped) or 32 (2×2 area average of the 64×64 image).
        templates: True for the built-in TEMPLATES, False for the bare name, or a sequence of
            format strings using ``{name}`` (and optionally ``{a}``, the article for name).
        seed: picks each item's template from (seed, emoji index); same seed, same captions.
        root: folder holding emoji.npz and MANIFEST.json (default ``data_dir()/emoji``).
    """

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        templates: bool | Sequence[str] = True,
        seed: int = 0,
        root: str | Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if image_size not in (32, 64):
            raise ValueError(f"image_size must be 64 or 32, got {image_size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.templates = self._check_templates(templates)
        self.split, self.image_size, self.seed = split, image_size, seed

        arrays = load_emoji_arrays(root)
        keep = np.ones(len(arrays["names"]), bool) if split == "all" else arrays["splits"] == split
        self.indices = np.flatnonzero(keep)  # positions in the full, CLDR-ordered list
        self.images = arrays["images"][self.indices]  # (N, 64, 64, 3) uint8
        self.names = arrays["names"][self.indices].tolist()  # Unicode names, unmodified
        self.clean_names = arrays["captions"][self.indices].tolist()  # cleaned names
        self.groups = arrays["groups"][self.indices].tolist()
        self.subgroups = arrays["subgroups"][self.indices].tolist()
        self.codepoints = arrays["codepoints"][self.indices].tolist()

    @staticmethod
    def _check_templates(templates: bool | Sequence[str]) -> tuple[str, ...]:
        if templates is True:
            return TEMPLATES
        if templates is False:
            return ("{name}",)
        if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
            raise TypeError("templates must be True, False, or a non-empty sequence of format strings")
        for t in templates:
            if not isinstance(t, str) or "{name}" not in t:
                raise ValueError(f"each template must be a str containing '{{name}}', got {t!r}")
        return tuple(templates)

    def __len__(self) -> int:
        return len(self.indices)

    def caption(self, i: int) -> str:
        """Item i's caption: its cleaned name in the template picked by (seed, emoji index)."""
        name = self.clean_names[i]
        if len(self.templates) == 1:
            return self.templates[0].format(name=name, a=with_article(name))
        rng = np.random.default_rng((self.seed, int(self.indices[i])))
        template = self.templates[int(rng.integers(len(self.templates)))]
        return template.format(name=name, a=with_article(name))

    def image(self, i: int) -> torch.Tensor:
        """Item i's image, float (3, S, S) in [-1, 1]."""
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, 64, 64)
        if self.image_size == 32:
            x = F.avg_pool2d(x[None], kernel_size=2)[0]  # (3, 32, 32): area downsampling
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for EmojiDataset({self.split!r}) of length {len(self)}")
        i = i % len(self)
        return self.image(i), self.caption(i)

    def __repr__(self) -> str:
        return f"EmojiDataset(split={self.split!r}, image_size={self.image_size}, n={len(self)})"
