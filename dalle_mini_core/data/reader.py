"""The attribute reader: recover shape, colour, size and position from any image, no learning.

Generated images are scored against their prompt with it ("does this picture show a small
red circle at the top left?"), so it must read imperfect pictures: a background off its true
colour, soft edges, speckle, a colour cast, a stray blob. Steps (`detect_objects`):

1. Background: fit a plane a + b·x + c·y per channel to the border pixels (robustly:
   refit without the border pixels an object touches). A drifting or graded background is
   then still "background".
2. Foreground: pixels farther than `threshold` from the background (RGB distance, [-1, 1]
   units); connected components (8-neighbours, `label_components`).
3. Colour: median of the component's core pixels (the most contrasted ones), nearest
   palette colour.
4. Opacity α of every pixel near the component: its position on the line from the
   background to the object colour, α = (x − b)·(c − b) / |c − b|². Summing α gives an
   area that blur does not change and noise averages out; specks below `min_area` go.
5. Shape: draw each ideal shape with that area at that centroid and keep the one closest
   to α (least squares). This is the geometric test "fill ratio of the bounding box:
   circle π/4, square 1, triangle 1/2; a triangle's mass sits low" done with all pixels at
   once, which noise and blur disturb far less than a thresholded bounding box.
6. Size from the fitted shape's side, position from the centre of its bounding box.

`score_caption` compares the objects read from an image with what a caption states.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .attributes import (
    ATTRIBUTES,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    parse_caption,
    relations_between,
)
from .shapes import ShapesDataset, _gaussian_blur, render, render_corrupted, shape_coverage

__all__ = [
    "FILL_RATIO",
    "Detection",
    "estimate_background",
    "label_components",
    "detect_objects",
    "read_attributes",
    "score_caption",
    "score_captions",
    "reader_accuracy",
]

#: Area of each shape over the area of its bounding box.
FILL_RATIO: dict[str, float] = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
_PALETTE = np.array([COLOURS[c] for c in COLOURS], dtype=np.float64) / 127.5 - 1.0  # (K, 3) in [-1, 1]
_SIZE_THRESHOLD = float(np.sqrt(SIZES["small"] * SIZES["large"]))  # small below, large above (× image side)
_TEMPLATE_BLURS = (0.0, 0.6, 1.0, 1.4, 1.8)  # Gaussian blurs (pixels) of the ideal shapes the reader tries
_MAX_CANDIDATES = 8  # score_caption matches caption objects against at most this many detections


@dataclass(frozen=True)
class Detection:
    """One object found in an image, with the measurements behind its attributes."""

    object: ShapeObject  # the attributes read
    area: float  # Σα over the component, pixels²
    centre: tuple[float, float]  # (x, y) of the fitted bounding box's centre, pixels
    extent: float  # side of the fitted bounding box, pixels
    rgb: tuple[float, float, float]  # measured colour, [-1, 1]
    fit_error: dict[str, float]  # per shape: mean squared difference between α and the ideal shape


# ---------------------------------------------------------------------------------------
# 1. Background and components
# ---------------------------------------------------------------------------------------


def _as_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) tensor or array in [-1, 1] → (H, W, 3) float64 array."""
    if torch.is_tensor(image):
        image = image.detach().cpu().double().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a torch.Tensor or numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2] or image.shape[1] < 16:
        raise ValueError(f"image must be one square (3, H, W) image with H >= 16, got shape {image.shape}")
    return np.asarray(image, dtype=np.float64).transpose(1, 2, 0)


def estimate_background(image: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Background colour at every pixel, (H, W, 3): a plane per channel fitted to the border.

    Each round drops the border pixels far from the current fit (objects that touch the
    border) and fits again. Values saturated at ±1 say only "at least 1", so they are left
    out of a channel's fit, and the fitted plane is clipped to [-1, 1] like the image.
    """
    h, w, _ = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    border = ((ys == 0) | (ys == h - 1) | (xs == 0) | (xs == w - 1)).ravel()
    design = np.stack([np.ones(h * w), xs.ravel() / w - 0.5, ys.ravel() / h - 0.5], axis=1)  # (HW, 3 terms)
    pixels = image.reshape(-1, 3)
    fit = np.broadcast_to(np.median(pixels[border], axis=0), pixels.shape)
    keep = border
    for _ in range(rounds):
        residual = np.linalg.norm(pixels - fit, axis=1)
        spread = np.median(residual[keep])
        keep = border & (residual <= max(4 * spread, 0.1))
        planes = []
        for c in range(3):
            use = keep & (np.abs(pixels[:, c]) < 0.995)
            if use.sum() < 8:  # saturated all along the border: the background is ±1 there
                planes.append(np.full(h * w, np.median(pixels[keep, c])))
                continue
            coef, *_ = np.linalg.lstsq(design[use], pixels[use, c], rcond=None)
            planes.append(design @ coef)
        fit = np.clip(np.stack(planes, axis=1), -1.0, 1.0)  # (HW, 3)
    return fit.reshape(h, w, 3)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask (8-neighbours): labels (H, W), 0 = none; count.

    Every pixel starts with its own index and repeatedly takes the smallest index among its
    neighbours until nothing changes: each component ends with one label.
    """
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"mask must be a 2-D boolean array, got {mask.dtype} of shape {mask.shape}")
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        neighbours = np.min([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
        updated = np.where(mask, neighbours, none)
        if np.array_equal(updated, labels):
            break
        labels = updated
    roots = np.unique(labels[mask])
    relabel = np.zeros(h * w + 1, dtype=np.int64)
    relabel[roots] = np.arange(1, len(roots) + 1)
    return relabel[labels], len(roots)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by `radius` pixels (square neighbourhood)."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    size = 2 * radius + 1
    return np.any([padded[dy : dy + h, dx : dx + w] for dy in range(size) for dx in range(size)], axis=0)


# ---------------------------------------------------------------------------------------
# 2. Reading one component
# ---------------------------------------------------------------------------------------


def _core(own: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The most contrasted pixels of a component (boolean mask)."""
    return own & (distance >= 0.8 * np.percentile(distance[own], 90))


def _nearest_palette(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Index of the palette colour whose segment from the background `bg` passes closest to
    each colour `rgb` (both (N, 3)): blur fades an object towards the background along it."""
    to_palette = _PALETTE[None] - bg[:, None]  # (N, K, 3)
    seen = (rgb - bg)[:, None]  # (N, 1, 3)
    t = np.clip((to_palette * seen).sum(-1) / (to_palette**2).sum(-1), 0.0, 1.0)  # (N, K)
    return np.argmin(np.linalg.norm(t[..., None] * to_palette - seen, axis=-1), axis=1)  # (N,)


def _split_by_colour(own: np.ndarray, image: np.ndarray, background: np.ndarray, distance: np.ndarray) -> list[np.ndarray]:
    """Split a component holding two touching objects of different colours.

    When a second palette colour holds at least a fifth of the core pixels, every pixel of
    the component goes to the nearer of the two colours and each part is labelled again.
    """
    core = _core(own, distance)
    labels = _nearest_palette(image[core], background[core])
    counts = np.bincount(labels, minlength=len(_PALETTE))
    first, second = np.argsort(counts)[::-1][:2]
    if counts[second] < max(3, 0.2 * core.sum()):
        return [own]
    # every pixel to the nearer of the two colours' segments from the background
    ys, xs = np.nonzero(own)
    seen = image[own] - background[own]  # (N, 3)
    dists = []
    for k in (first, second):
        to_k = _PALETTE[k] - background[own]  # (N, 3)
        t = np.clip((to_k * seen).sum(-1) / (to_k**2).sum(-1), 0.0, 1.0)  # (N,)
        dists.append(np.linalg.norm(t[:, None] * to_k - seen, axis=1))
    parts = []
    for choice in (0, 1):
        part = np.zeros_like(own)
        part[ys, xs] = np.argmin(dists, axis=0) == choice
        sub, count = label_components(part)
        parts.extend(sub == j for j in range(1, count + 1))
    return parts


def _read_component(
    image: np.ndarray, background: np.ndarray, distance: np.ndarray, own: np.ndarray, others: np.ndarray
) -> Detection | None:
    """Attributes of the component `own` (boolean mask); None when it is a speck."""
    size = image.shape[0]
    # 3. colour: median of the most contrasted pixels; the palette colour whose segment from
    #    the background passes closest to it (blur fades a small object's core towards the
    #    background, along that segment)
    core = _core(own, distance)
    rgb = np.median(image[core], axis=0)  # (3,)
    bg = np.median(background[core], axis=0)  # (3,)
    k = int(_nearest_palette(rgb[None], bg[None])[0])
    to_palette = _PALETTE - bg  # (K, 3)
    colour = list(COLOURS)[k]
    # 4. opacity α on the component and a ring around it (not next to other components);
    #    the object's full colour is at least as far from the background as its palette colour
    window = _dilate(own, 3) & ~_dilate(others, 1)
    reach = max(float(np.linalg.norm(rgb - bg)), float(np.linalg.norm(to_palette[k])))
    full = rgb + (rgb - bg) * (reach / max(float(np.linalg.norm(rgb - bg)), 1e-6) - 1.0)  # (3,)
    direction = full - background  # (H, W, 3)
    alpha = np.einsum("hwc,hwc->hw", image - background, direction) / np.maximum(
        np.einsum("hwc,hwc->hw", direction, direction), 1e-6
    )
    alpha = np.where(window, np.clip(alpha, 0.0, 1.0), 0.0)
    area = float(alpha.sum())
    smallest = FILL_RATIO["triangle"] * (SIZES["small"] * size) ** 2
    if area < 0.4 * smallest:
        return None
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    cx, cy = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    # 5. shape: the ideal shape of the same area and centroid, sharp or blurred, that best
    #    explains α
    fits = {}
    for shape in SHAPES:
        extent = float(np.sqrt(area / FILL_RATIO[shape]))
        centre = (cx, cy - extent / 6) if shape == "triangle" else (cx, cy)  # a triangle's centroid is 2/3 down
        ideal = shape_coverage(shape, centre, extent, size)
        error = min(
            float(np.mean((alpha - (_gaussian_blur(ideal[..., None], b)[..., 0] if b else ideal))[window] ** 2))
            for b in _TEMPLATE_BLURS
        )
        fits[shape] = (error, centre, extent)
    shape = min(fits, key=lambda s: fits[s][0])
    _, centre, extent = fits[shape]
    # 6. size and grid cell
    size_name = "small" if extent < _SIZE_THRESHOLD * size else "large"
    col = int(np.clip(centre[0] // (size / 3), 0, 2))
    row = int(np.clip(centre[1] // (size / 3), 0, 2))
    obj = ShapeObject(shape, colour, size_name, POSITIONS[3 * row + col])
    return Detection(obj, area, centre, extent, tuple(float(c) for c in rgb), {s: f[0] for s, f in fits.items()})


def detect_objects(image: torch.Tensor | np.ndarray, *, threshold: float = 0.5) -> list[Detection]:
    """Every object found in one (3, H, W) image in [-1, 1], largest first (see module docstring).

    `threshold` is the RGB distance from the background (in [-1, 1] units; palette colours
    are 1.6–2.7 away from the default background) above which a pixel is foreground.
    """
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    x = _as_hwc(image)
    # 1.-2. background model, foreground, components
    background = estimate_background(x)
    distance = np.linalg.norm(x - background, axis=2)  # (H, W)
    labels, count = label_components(distance > threshold)
    masks = [part for k in range(1, count + 1) for part in _split_by_colour(labels == k, x, background, distance)]
    found = []
    for k, own in enumerate(masks):
        others = np.any([m for j, m in enumerate(masks) if j != k], axis=0) if len(masks) > 1 else np.zeros_like(own)
        detection = _read_component(x, background, distance, own, others)
        if detection is not None:
            found.append(detection)
    return sorted(found, key=lambda det: -det.area)


def read_attributes(image: torch.Tensor | np.ndarray) -> list[ShapeObject]:
    """The objects in one (3, H, W) image in [-1, 1], largest first."""
    return [det.object for det in detect_objects(image)]


# ---------------------------------------------------------------------------------------
# 3. Scoring images against captions
# ---------------------------------------------------------------------------------------


def _match(stated: Sequence[dict[str, str]], relation: str | None, found: Sequence[ShapeObject]) -> dict[str, float]:
    """Per-attribute agreement between stated objects and found objects, best pairing.

    Each stated object is paired with a distinct found object (the pairing that agrees on
    most attributes; ties go to the larger objects, which come first). An attribute's score
    is the fraction of the objects stating it that agree; missing objects disagree.
    """
    found = list(found[:_MAX_CANDIDATES])
    n = len(stated)
    best, best_hits = None, -1
    for pick in itertools.permutations(range(len(found)), min(n, len(found))):
        hits = sum(getattr(found[j], k) == v for i, j in enumerate(pick) for k, v in stated[i].items())
        if hits > best_hits:
            best, best_hits = pick, hits
    paired = [found[j] for j in best] + [None] * (n - len(best))
    scores: dict[str, float] = {}
    for name in ATTRIBUTES:
        stating = [(s, o) for s, o in zip(stated, paired) if name in s]
        if stating:
            scores[name] = float(np.mean([o is not None and getattr(o, name) == s[name] for s, o in stating]))
    if relation is not None:
        both = len(paired) == 2 and None not in paired
        scores["relation"] = float(both and relation in relations_between(paired[0], paired[1]))
    scores["all"] = float(all(v == 1.0 for v in scores.values()))
    scores["count"] = float(len(found) == n)
    return scores


def score_caption(image: torch.Tensor | np.ndarray, caption: str) -> dict[str, float]:
    """How well one image shows what `caption` states.

    Returns, for every attribute the caption states (shape, colour, size, position) the
    fraction of its objects that agree; "relation" (1/0) when it states one; "all" (1/0):
    every stated attribute and relation agree; "count" (1/0): the image holds exactly as
    many objects as the caption (not part of "all").
    """
    attrs = parse_caption(caption)
    return _match(attrs.objects, attrs.relation, read_attributes(image))


def score_captions(images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Mean of `score_caption` over a batch (B, 3, H, W); each key averages the images that have it."""
    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if len(captions) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(captions)} captions")
    per_image = [score_caption(img, text) for img, text in zip(images, captions)]
    keys = [k for k in (*ATTRIBUTES, "relation", "all", "count") if any(k in s for s in per_image)]
    return {k: float(np.mean([s[k] for s in per_image if k in s])) for k in keys}


def reader_accuracy(
    num_scenes: int,
    *,
    num_objects: int = 1,
    image_size: int = 32,
    corrupted: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of the reader per attribute on fresh test-split scenes (clean or corrupted renders).

    Each scene's true objects are matched with the objects read; "all" needs every
    attribute of every object right, "count" the right number of objects.
    """
    if not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"num_scenes must be a positive int, got {num_scenes!r}")
    data = ShapesDataset("test", length=num_scenes, image_size=image_size, num_objects=num_objects, seed=seed)
    totals: dict[str, float] = {}
    for i in range(num_scenes):
        scene: Scene = data.scene(i)
        image = render_corrupted(scene, image_size, seed=seed * 2**32 + i) if corrupted else render(scene, image_size)
        scores = _match([o.as_dict() for o in scene.objects], None, read_attributes(image))
        for k, v in scores.items():
            totals[k] = totals.get(k, 0.0) + v
    return {k: v / num_scenes for k, v in totals.items()}
