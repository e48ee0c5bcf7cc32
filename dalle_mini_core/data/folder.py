"""Your own image–caption pairs: a folder with a ``captions.tsv``, or webdataset-style tar shards.

Two layouts, one dataset type (``CaptionedImages``) that yields ``(image, caption)`` like
every other dataset in the course:

* **Folder** (``ImageCaptionFolder``): images anywhere under ``root`` plus ``root/captions.tsv``,
  UTF-8, one ``filename<TAB>caption`` per line, the filename relative to ``root`` (sub-folders
  allowed: ``cats/001.jpg``). No header; blank lines and lines starting with ``#`` are ignored.
  A TSV because captions contain commas and quotes, and a tab never appears in one.
* **Tar shards** (``TarShards``): what img2dataset and webdataset write — ``.tar`` files whose
  members are grouped by key (the member path up to the first dot of its file name):
  ``000017.jpg`` + ``000017.txt`` is one sample. Image extensions ``.jpg .jpeg .png .webp``;
  the caption is the ``.txt`` member; other members (``.json``, ``.cls`` ...) are ignored, but
  a key with neither an image nor a caption is reported, not dropped.
  Read with Python's ``tarfile``: no webdataset dependency.

Every image is decoded when the dataset is built, converted to RGB (a transparent image is
composited on white first, like the emoji set), resized so its SHORTER side is
``image_size`` (Lanczos) and centre-cropped to a square, and kept in memory as uint8:
64×64×3 bytes = 12 KiB an image, so 10,000 images take 120 MiB. This suits the reduced
datasets of the course (a few thousand COCO or CC3M pairs); stream larger sets yourself.

Nothing is dropped silently. A corrupt image, an image without caption, a caption without
image, an empty caption or (with ``strict_size=True``) an image that is not already
``image_size``×``image_size`` raises ``DataFileError`` naming the file. With
``on_error="skip"`` such samples are left out, recorded in ``dataset.skipped`` as
``(file, reason)`` pairs, and one summary warning is emitted.
"""
from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["CaptionedImages", "ImageCaptionFolder", "TarShards", "DataFileError",
           "CAPTIONS_FILE", "IMAGE_EXTENSIONS", "prepare_image"]

CAPTIONS_FILE = "captions.tsv"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
ON_ERROR = ("raise", "skip")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class DataFileError(ValueError):
    """A sample of a user dataset is unusable; ``.file`` names it, ``.reason`` says why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def prepare_image(img: Image.Image, image_size: int, *, strict_size: bool = False, name: str = "image") -> np.ndarray:
    """RGB uint8 (image_size, image_size, 3): shorter side resized to image_size, centre crop.

    Transparent images (RGBA, LA, P with transparency) are composited on white. With
    ``strict_size`` an image that is not already image_size×image_size raises DataFileError.
    """
    if strict_size and img.size != (image_size, image_size):
        raise DataFileError(name, f"size {img.size[0]}x{img.size[1]}, expected {image_size}x{image_size} (strict_size=True)")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    w, h = img.size
    scale = image_size / min(w, h)
    new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8)  # (S, S, 3)


def _decode(data: bytes | Path, name: str, image_size: int, strict_size: bool) -> np.ndarray:
    """Open and fully decode an image (from bytes or a path); DataFileError naming it if corrupt."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()  # decode every pixel now: truncated files fail here, not mid-training
            return prepare_image(img, image_size, strict_size=strict_size, name=name)
    except DataFileError:
        raise
    except _DECODE_ERRORS as err:
        raise DataFileError(name, f"corrupt or unreadable image ({type(err).__name__}: {err})") from None


class CaptionedImages(Dataset):
    """Decoded images with captions; ``ds[i] -> (image (3, S, S) float in [-1, 1], caption)``.

    Built by ``ImageCaptionFolder`` or ``TarShards``. Attributes: ``images`` uint8
    (N, S, S, 3), ``captions`` and ``sources`` (the file each image came from), ``skipped``
    (``(file, reason)`` for every sample left out with ``on_error="skip"``).
    """

    def __init__(self, *, image_size: int, strict_size: bool, on_error: str) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.image_size, self.strict_size, self.on_error = image_size, strict_size, on_error
        self.images = np.zeros((0, image_size, image_size, 3), np.uint8)
        self.captions: list[str] = []
        self.sources: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def _problem(self, err: DataFileError) -> None:
        """Raise, or record the skipped sample (file, reason)."""
        if self.on_error == "raise":
            raise err
        self.skipped.append((err.file, err.reason))

    def _try(self, fn: Callable[[], np.ndarray]) -> np.ndarray | None:
        try:
            return fn()
        except DataFileError as err:
            self._problem(err)
            return None

    def _finish(self, images: list[np.ndarray], captions: list[str], sources: list[str], where: str) -> None:
        """Store the samples, warn once about skipped ones, refuse an empty dataset."""
        if self.skipped:
            shown = "; ".join(f"{f}: {r}" for f, r in self.skipped[:3])
            more = f" (and {len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
            warnings.warn(
                f"{where}: skipped {len(self.skipped)} sample(s), kept {len(images)}; see .skipped. "
                f"{shown}{more}",
                stacklevel=3,
            )
        if not images:
            raise ValueError(f"{where}: no usable image-caption pairs")
        self.images = np.stack(images)  # (N, S, S, 3) uint8
        self.captions, self.sources = captions, sources

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of length {len(self)}")
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S)
        return x, self.captions[i]


class ImageCaptionFolder(CaptionedImages):
    """A folder of images with ``captions.tsv`` (``filename<TAB>caption`` per line).

    Args:
        root: the folder.
        image_size: side of the square output images.
        captions_file: name of the captions file inside root (default ``captions.tsv``).
        strict_size: refuse images that are not already image_size×image_size.
        on_error: "raise" (default) or "skip" (skip, record in ``.skipped``, warn once).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int = 64,
        captions_file: str = CAPTIONS_FILE,
        strict_size: bool = False,
        on_error: str = "raise",
    ) -> None:
        super().__init__(image_size=image_size, strict_size=strict_size, on_error=on_error)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        table = self.root / captions_file
        if not table.is_file():
            raise FileNotFoundError(f"{table} not found: put one 'filename<TAB>caption' line per image there")

        # 1. read the captions table
        listed: dict[str, str] = {}
        mentioned: set[str] = set()  # every filename in the table, usable or not
        for lineno, line in enumerate(table.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            where = f"{table}:{lineno}"
            if "\t" not in line:
                self._problem(DataFileError(where, f"expected 'filename<TAB>caption', got {line!r}"))
                continue
            name, caption = (s.strip() for s in line.split("\t", 1))
            mentioned.add(name)
            if name in listed:
                self._problem(DataFileError(where, f"{name!r} is listed twice"))
            elif not caption:
                self._problem(DataFileError(str(self.root / name), f"empty caption ({where})"))
            else:
                listed[name] = caption

        # 2. match files and captions both ways
        on_disk = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        for name in on_disk:
            if name not in mentioned:
                self._problem(DataFileError(str(self.root / name), f"image has no caption in {captions_file}"))
        present = set(on_disk)

        # 3. decode, in the order of the captions table
        images, captions, sources = [], [], []
        for name, caption in listed.items():
            path = self.root / name
            if name not in present:
                reason = "caption without image (file not found)" if not path.exists() else \
                    f"not an image file (extension must be one of {IMAGE_EXTENSIONS})"
                self._problem(DataFileError(str(path), reason))
                continue
            img = self._try(lambda: _decode(path, str(path), image_size, strict_size))
            if img is not None:
                images.append(img)
                captions.append(caption)
                sources.append(str(path))
        self._finish(images, captions, sources, str(self.root))


def _shard_paths(shards: str | Path | Sequence[str | Path]) -> list[Path]:
    """A list of shard files from one file, a folder of ``*.tar``, or a sequence of files."""
    if isinstance(shards, (str, Path)):
        path = Path(shards)
        if path.is_dir():
            found = sorted(path.glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"no .tar shards in folder {path}")
            return found
        shards = [path]
    paths = [Path(s) for s in shards]
    if not paths:
        raise ValueError("shards is empty")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"tar shard {p} not found")
    return paths


def _split_key(member: str) -> tuple[str, str]:
    """webdataset's rule: 'dir/000017.jpg' -> key 'dir/000017', extension 'jpg'."""
    path = PurePosixPath(member)
    stem, _, ext = path.name.partition(".")
    return str(path.parent / stem) if str(path.parent) != "." else stem, ext.lower()


class TarShards(CaptionedImages):
    """webdataset / img2dataset tar shards: ``key.jpg|jpeg|png|webp`` + ``key.txt`` per sample.

    Args:
        shards: a .tar file, a folder of .tar files (sorted by name), or a list of files.
        image_size, strict_size, on_error: as for ``ImageCaptionFolder``.
    Sources are named ``shard.tar:member``.
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        *,
        image_size: int = 64,
        strict_size: bool = False,
        on_error: str = "raise",
    ) -> None:
        super().__init__(image_size=image_size, strict_size=strict_size, on_error=on_error)
        self.shards = _shard_paths(shards)
        images, captions, sources = [], [], []
        for shard in self.shards:
            try:
                samples = self._read_shard(shard)
            except DataFileError as err:
                self._problem(err)
                continue
            for key, members in samples.items():
                sample = self._sample(shard, key, members)
                if sample is not None:
                    images.append(sample[0])
                    captions.append(sample[1])
                    sources.append(sample[2])
        self._finish(images, captions, sources, ", ".join(str(s) for s in self.shards))

    def _read_shard(self, shard: Path) -> dict[str, dict[str, tuple[str, bytes]]]:
        """{key: {ext: (member name, bytes)}} in the order keys first appear in the shard."""
        samples: dict[str, dict[str, tuple[str, bytes]]] = {}
        try:
            with tarfile.open(shard, "r:*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = _split_key(member.name)
                    fh = tar.extractfile(member)
                    samples.setdefault(key, {})[ext] = (member.name, fh.read() if fh else b"")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataFileError(str(shard), f"not a readable tar file ({type(err).__name__}: {err})") from None
        return samples

    def _sample(self, shard: Path, key: str, members: dict[str, tuple[str, bytes]]) -> tuple[np.ndarray, str, str] | None:
        """Decode one key's image and caption, or record / raise the problem."""
        image_exts = [e for e in members if "." + e in IMAGE_EXTENSIONS]
        if len(image_exts) > 1:
            self._problem(DataFileError(f"{shard}:{key}", f"several images for one key: {sorted(image_exts)}"))
            return None
        if not image_exts:
            if "txt" in members:
                self._problem(DataFileError(f"{shard}:{members['txt'][0]}", "caption without image"))
            else:  # e.g. 'a.b.png' has key 'a' and extension 'b.png': say so rather than drop it
                names = sorted(name for name, _ in members.values())
                self._problem(DataFileError(
                    f"{shard}:{key}", f"no image and no .txt caption among {names} (the key ends "
                    "at the first dot of the file name, the rest is the extension)"))
            return None
        name, data = members[image_exts[0]]
        source = f"{shard}:{name}"
        if "txt" not in members:
            self._problem(DataFileError(source, f"image has no caption ({key}.txt missing)"))
            return None
        txt_name, raw = members["txt"]
        try:
            caption = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._problem(DataFileError(f"{shard}:{txt_name}", "caption is not valid UTF-8"))
            return None
        if not caption:
            self._problem(DataFileError(f"{shard}:{txt_name}", "empty caption"))
            return None
        img = self._try(lambda: _decode(data, source, self.image_size, self.strict_size))
        return None if img is None else (img, caption, source)
