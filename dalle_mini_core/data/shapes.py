"""Shapes: a procedural, offline, infinite captioned-image dataset with held-out combinations.

Each item is a scene of one or two coloured shapes (vocabulary in `attributes.py`), drawn
anti-aliased on a light background, with a caption from a few templates. Everything is a
pure function of a seed, so a split is a range of seeds and needs no files:

    seed of item i = (3 · seed + split index) · 2³² + i        (train 0, val 1, test 2)

which gives every (split, seed, i) its own seed, never shared with another split.

Compositional generalisation (can a model draw a "purple triangle" when it only ever saw
purple things and triangles apart?) is tested with `HELDOUT_COMBINATIONS`: (colour, shape)
pairs that never appear in the train split; val and test draw them on demand
(``heldout_only=True``).

`render_corrupted` draws the imperfections of generated images (a drifting background,
blur, a global colour cast, noise), so the attribute reader (`reader.py`) can be tested on
them and not only on clean renders.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from .attributes import (
    COLOURS,
    MAX_JITTER,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    _as_rng,
    caption,
    position_cell,
    scene_attributes,
    templates_for,
)
from .tokens import collate

__all__ = [
    "HELDOUT_COMBINATIONS",
    "SPLITS",
    "is_heldout",
    "sample_scene",
    "scene_for_caption",
    "shape_coverage",
    "object_geometry",
    "render",
    "render_corrupted",
    "scene_seed",
    "ShapesDataset",
    "make_batch",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: (colour, shape) pairs that never appear in the train split. Every colour and every shape
#: still appears in training with other partners.
HELDOUT_COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("purple", "triangle"),
    ("green", "square"),
    ("yellow", "circle"),
)

BACKGROUND = (238, 238, 232)  # the mean background colour (sRGB 0–255)
BACKGROUND_SPREAD = 10  # each scene's background differs from BACKGROUND by at most this per channel
SUPERSAMPLE = 4  # sub-pixels per pixel side when computing anti-aliased coverage


def is_heldout(item: Scene | ShapeObject) -> bool:
    """True when the object (or any object of the scene) is a held-out (colour, shape) pair."""
    if isinstance(item, ShapeObject):
        return (item.colour, item.shape) in HELDOUT_COMBINATIONS
    if isinstance(item, Scene):
        return any(is_heldout(o) for o in item.objects)
    raise TypeError(f"is_heldout expects a Scene or a ShapeObject, got {type(item).__name__}")


# ---------------------------------------------------------------------------------------
# 1. Sampling scenes
# ---------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _check_num_objects(num_objects: int | Sequence[int] | None) -> tuple[int, ...]:
    if num_objects is None:
        return (1, 2)
    counts = (num_objects,) if isinstance(num_objects, (int, np.integer)) else tuple(num_objects)
    if not counts or not all(isinstance(n, (int, np.integer)) and n in (1, 2) for n in counts):
        raise ValueError(f"num_objects must be 1, 2 or a sequence of them, got {num_objects!r}")
    return tuple(int(n) for n in counts)


def sample_scene(
    rng: np.random.Generator | int,
    *,
    num_objects: int | Sequence[int] | None = None,
    split: str = "train",
    heldout_only: bool = False,
) -> Scene:
    """Draw a random scene.

    `num_objects`: 1, 2, or a sequence of allowed counts (None: 1 or 2, equally likely).
    `split="train"` never draws a held-out (colour, shape) pair; "val" and "test" draw from
    the full distribution, or, with `heldout_only=True`, scenes where one object is held out.
    """
    rng = _as_rng(rng)
    if rng is None:
        raise TypeError("rng must be a numpy Generator or an int seed, got None")
    _check_split(split)
    if heldout_only and split == "train":
        raise ValueError("heldout_only=True needs split='val' or 'test': the train split never holds them")
    counts = _check_num_objects(num_objects)

    n = counts[int(rng.integers(len(counts)))]
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    background = tuple(int(c) for c in np.asarray(BACKGROUND) + rng.integers(-BACKGROUND_SPREAD, BACKGROUND_SPREAD + 1, 3))
    heldout_slot = int(rng.integers(n)) if heldout_only else -1
    objects = []
    for k, cell in enumerate(cells):
        while True:
            if k == heldout_slot:
                colour, shape = HELDOUT_COMBINATIONS[int(rng.integers(len(HELDOUT_COMBINATIONS)))]
            else:
                colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
            if split != "train" or (colour, shape) not in HELDOUT_COMBINATIONS:
                break
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        jitter = tuple(float(j) for j in rng.uniform(-MAX_JITTER, MAX_JITTER, 2))
        objects.append(ShapeObject(shape, colour, size, POSITIONS[int(cell)], jitter=jitter))
    return Scene(tuple(objects), background)


def scene_for_caption(text: str, rng: np.random.Generator | int, *, max_tries: int = 10_000) -> Scene:
    """Draw a random scene that caption `text` describes: what it states is fixed, the rest is drawn.

    The attributes a caption leaves out (sizes and cells under a relation template, the jitter,
    the background) are drawn as `sample_scene` draws them (split "test": any colour–shape pair),
    so repeated calls show the set of images one caption allows — what a perfect prior would
    sample from. Raises ValueError for a caption no template matches.
    """
    from dataclasses import replace

    from .attributes import describes, parse_caption

    attrs = parse_caption(text)
    rng = _as_rng(rng)
    if rng is None:
        raise TypeError("rng must be a numpy Generator or an int seed, got None")
    for _ in range(max_tries):
        scene = sample_scene(rng, num_objects=len(attrs.objects), split="test")
        objects = tuple(replace(o, **stated) for o, stated in zip(scene.objects, attrs.objects))
        if len({o.position for o in objects}) == len(objects) and describes(attrs, objects):
            return Scene(objects, scene.background)
    raise RuntimeError(f"no scene found for {text!r} in {max_tries} draws")  # unreachable for valid captions


# ---------------------------------------------------------------------------------------
# 2. Rendering
# ---------------------------------------------------------------------------------------


def shape_coverage(shape: str, centre: tuple[float, float], extent: float, image_size: int) -> np.ndarray:
    """Fraction of each pixel covered by a shape, (H, W) float in [0, 1] (anti-aliasing).

    `centre` (x, y) and `extent` (side of the bounding box) are in pixels, with pixel (i, j)
    covering [j, j+1) × [i, i+1). Coverage is counted on SUPERSAMPLE² sub-pixels per pixel.
    The triangle points up, its base at the bottom of the bounding box.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    sub = (np.arange(image_size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sub-pixel centres
    y, x = sub[:, None] - centre[1], sub[None, :] - centre[0]  # (HS, 1), (1, WS)
    half = extent / 2
    if shape == "circle":
        inside = x**2 + y**2 <= half**2
    elif shape == "square":
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    else:  # triangle: the half-width grows from 0 at the top (y = -half) to `half` at the base
        inside = (np.abs(y) <= half) & (np.abs(x) <= (y + half) / 2)
    s = SUPERSAMPLE
    return inside.reshape(image_size, s, image_size, s).mean(axis=(1, 3))  # (H, W)


def object_geometry(obj: ShapeObject, image_size: int) -> tuple[tuple[float, float], float]:
    """Centre (x, y) and extent of an object's bounding box, in pixels."""
    row, col = position_cell(obj.position)
    cx = ((col + 0.5) / 3 + obj.jitter[0]) * image_size
    cy = ((row + 0.5) / 3 + obj.jitter[1]) * image_size
    return (cx, cy), SIZES[obj.size] * image_size


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or isinstance(image_size, bool) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")


def _paint(scene: Scene, image_size: int, background: np.ndarray) -> np.ndarray:
    """Composite the objects over `background` (H, W, 3) in 0–255 floats."""
    canvas = background.astype(np.float64).copy()
    for obj in scene.objects:
        centre, extent = object_geometry(obj, image_size)
        alpha = shape_coverage(obj.shape, centre, extent, image_size)[..., None]  # (H, W, 1)
        canvas = canvas * (1 - alpha) + np.asarray(COLOURS[obj.colour], dtype=np.float64) * alpha
    return canvas


def _to_tensor(canvas: np.ndarray) -> torch.Tensor:
    """(H, W, 3) 0–255 → (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(canvas / 127.5 - 1.0).permute(2, 0, 1).float().contiguous()


def render(scene: Scene, image_size: int = 32) -> torch.Tensor:
    """Draw `scene` as a (3, H, W) float32 image in [-1, 1], quantised to 8-bit levels."""
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    _check_image_size(image_size)
    background = np.broadcast_to(np.asarray(scene.background, dtype=np.float64), (image_size, image_size, 3))
    return _to_tensor(np.round(_paint(scene, image_size, background)))


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur with reflected borders: blurred = M @ signal."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    source = np.pad(np.arange(n), radius, mode="reflect")  # which input each padded slot reads
    matrix = np.zeros((n, n))
    for i in range(n):
        np.add.at(matrix[i], source[i : i + 2 * radius + 1], taps)
    return matrix


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (standard deviation `sigma` pixels) of (H, W, C), reflected borders."""
    rows, cols = _blur_matrix(image.shape[0], float(sigma)), _blur_matrix(image.shape[1], float(sigma))
    along_rows = np.tensordot(rows, image, axes=(1, 0))  # (H, W, C)
    return np.tensordot(along_rows, cols, axes=(1, 1)).transpose(0, 2, 1)  # (H, C, W) -> (H, W, C)


def render_corrupted(
    scene: Scene,
    image_size: int = 32,
    *,
    seed: int = 0,
    background_shift: float = 0.15,
    blur: float = 0.6,
    colour_shift: float = 0.08,
    noise: float = 0.06,
) -> torch.Tensor:
    """Draw `scene` with the imperfections of a generated image, (3, H, W) in [-1, 1].

    In [-1, 1] units: the background drifts by up to `background_shift` per channel plus a
    linear gradient of the same amplitude across the image; then a Gaussian blur of `blur`
    pixels; a global colour cast of up to `colour_shift` per channel; Gaussian noise of
    standard deviation `noise`. Zero everywhere gives `render` without 8-bit rounding.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    _check_image_size(image_size)
    for name, value, top in (("background_shift", background_shift, 1), ("blur", blur, 3), ("colour_shift", colour_shift, 1), ("noise", noise, 1)):
        if not isinstance(value, (int, float)) or not 0 <= value <= top:
            raise ValueError(f"{name} must be a number in [0, {top}], got {value!r}")
    rng = np.random.default_rng(seed)
    # 1. a background that drifts: an offset plus a gradient in a random direction
    offset = rng.uniform(-background_shift, background_shift, 3) * 127.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, image_size)
    gradient = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]  # (H, W)
    amplitude = rng.uniform(-background_shift, background_shift, 3) * 127.5
    background = np.asarray(scene.background, dtype=np.float64) + offset + gradient[..., None] * amplitude
    image = _paint(scene, image_size, background) / 127.5 - 1.0  # (H, W, 3) in [-1, 1]
    # 2. soft edges, 3. a colour cast, 4. speckle
    if blur > 0:
        image = _gaussian_blur(image, blur)
    image = image + rng.uniform(-colour_shift, colour_shift, 3)
    image = image + rng.normal(0.0, 1.0, image.shape) * noise
    return torch.from_numpy(np.clip(image, -1, 1)).permute(2, 0, 1).float().contiguous()


# ---------------------------------------------------------------------------------------
# 3. The dataset: a split is a range of seeds
# ---------------------------------------------------------------------------------------


def scene_seed(split: str, seed: int, index: int) -> int:
    """The seed of item `index` of a split: (3·seed + split index)·2³² + index (disjoint ranges)."""
    _check_split(split)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(index, (int, np.integer)) or not 0 <= index < 2**32:
        raise ValueError(f"index must be an int in [0, 2**32), got {index!r}")
    return (3 * int(seed) + SPLITS.index(split)) * 2**32 + int(index)


class ShapesDataset(torch.utils.data.Dataset):
    """Captioned shapes scenes; item i is a pure function of (split, seed, i).

    ``dataset[i] -> (image (3, H, W) in [-1, 1], caption)``; `scene(i)` is the scene behind
    it and `attributes(i)` its ground-truth attributes (one dict per object).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        length: int = 10_000,
        image_size: int = 32,
        num_objects: int | Sequence[int] = (1, 2),
        seed: int = 0,
        heldout_only: bool = False,
        template: int | None = None,
    ) -> None:
        _check_split(split)
        _check_image_size(image_size)
        if not isinstance(length, (int, np.integer)) or not 0 < length <= 2**32:
            raise ValueError(f"length must be a positive int (at most 2**32), got {length!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if heldout_only and split == "train":
            raise ValueError("heldout_only=True needs split='val' or 'test': the train split never holds them")
        counts = _check_num_objects(num_objects)
        if template is not None and not (
            isinstance(template, (int, np.integer)) and all(0 <= template < len(templates_for(n)) for n in counts)
        ):
            raise ValueError(f"template must be an index valid for every count in num_objects={counts}, got {template!r}")
        self.split = split
        self.length = int(length)
        self.image_size = int(image_size)
        self.num_objects = counts
        self.seed = int(seed)
        self.heldout_only = bool(heldout_only)
        self.template = template  # None: a random template per item; an int fixes it

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: int) -> tuple[Scene, str]:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        rng = np.random.default_rng(scene_seed(self.split, self.seed, int(index)))
        scene = sample_scene(rng, num_objects=self.num_objects, split=self.split, heldout_only=self.heldout_only)
        return scene, caption(scene, self.template, rng=rng)

    def scene(self, index: int) -> Scene:
        """The scene of item `index`."""
        return self._draw(index)[0]

    def attributes(self, index: int) -> list[dict[str, str]]:
        """Ground-truth attributes of item `index`: one {shape, colour, size, position} per object."""
        return scene_attributes(self.scene(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        scene, text = self._draw(index)
        return render(scene, self.image_size), text

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, length={self.length}, image_size={self.image_size}, "
            f"num_objects={self.num_objects}, seed={self.seed}, heldout_only={self.heldout_only})"
        )


# ---------------------------------------------------------------------------------------
# 4. Batches
# ---------------------------------------------------------------------------------------


def make_batch(
    dataset: torch.utils.data.Dataset, indices: Sequence[int], *, tokens: bool = True, context_length: int = 32
) -> dict:
    """The batch dict of items `indices`: {"image": (B, 3, H, W), "caption": [B], "tokens": (B, L)}.

    `tokens=False` leaves the token ids out (no tokenizer needed). With a DataLoader use
    `data.tokens.collate` as `collate_fn`: it builds the same dict.
    """
    if len(indices) == 0:
        raise ValueError("make_batch needs at least one index")
    items = [dataset[int(i)] for i in indices]
    if tokens:
        return collate(items, context_length=context_length)
    return {"image": torch.stack([image for image, _ in items]), "caption": [text for _, text in items]}
