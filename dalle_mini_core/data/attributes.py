"""The vocabulary of the shapes world, its scenes, and the captions that describe them.

A scene holds one or two coloured shapes on a plain light background. Every object has
four attributes, each from a small closed vocabulary:

* ``shape``    — circle, square, triangle
* ``colour``   — six well-separated colours (`COLOURS`, sRGB 0–255)
* ``size``     — small or large (`SIZES`, side of the object's bounding box / image side)
* ``position`` — one cell of a 3×3 grid: "top left", "top", ..., "centre", ..., "bottom right"

A caption is a template filled with those words. The templates are plain format strings
(`ONE_OBJECT_TEMPLATES`, `TWO_OBJECT_TEMPLATES`); `parse_caption` turns each template into
a regular expression over the same vocabulary, so the writer and the reader of captions can
never drift apart. A caption states some attributes of each object (the relation templates,
"a red circle left of a blue square", state no absolute positions), and `parse_caption`
returns exactly the attributes it states.

Two-object relation captions measure attribute binding, a known weakness of unCLIP
(Ramesh et al. 2022, Section 7, Figure 14: "a red cube on top of a blue cube").
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "RELATIONS",
    "ATTRIBUTES",
    "ONE_OBJECT_TEMPLATES",
    "TWO_OBJECT_TEMPLATES",
    "ShapeObject",
    "Scene",
    "CaptionAttributes",
    "position_cell",
    "relations_between",
    "templates_for",
    "caption",
    "parse_caption",
    "describes",
    "scene_attributes",
]

# ---------------------------------------------------------------------------------------
# 1. Vocabulary
# ---------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Colour name → sRGB (0–255). The closest pair (blue, purple) is 114 apart in RGB, every
#: colour is more than 200 away from the light background, so a colour survives noise,
#: blur and a global shift of tens of levels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (235, 200, 25),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "purple": (140, 50, 170),
    "black": (35, 35, 35),
}

#: Size name → side of the object's bounding box as a fraction of the image side. A grid
#: cell is 1/3 wide and a centre moves at most MAX_JITTER from its cell centre, so two large
#: objects in neighbouring cells stay 1/3 − 0.26 − 2·0.01 = 0.053 apart (1.7 px at 32×32).
SIZES: dict[str, float] = {"small": 0.18, "large": 0.26}

#: The 3×3 grid, row by row; the cell (row, col) is POSITIONS[3 * row + col].
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip

#: Spatial relations between two objects, read as "<first> <relation> <second>".
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

#: Largest offset of an object's centre from its cell centre (fraction of the image side).
MAX_JITTER = 0.01

#: The attribute names of one object, in caption order.
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position")


def position_cell(position: str) -> tuple[int, int]:
    """(row, col) of a grid position name, e.g. "top right" → (0, 2)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    return divmod(POSITIONS.index(position), 3)


# ---------------------------------------------------------------------------------------
# 2. Scenes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: what it is, its colour, its size and its grid cell."""

    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    position: str  # one of POSITIONS
    # Offset (dx, dy) of the object's centre from its cell centre, as a fraction of the image
    # side: rendering detail only, not an attribute (ignored by ==).
    jitter: tuple[float, float] = field(default=(0.0, 0.0), compare=False)

    def __post_init__(self) -> None:
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("position", POSITIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
        jitter = tuple(float(j) for j in self.jitter)
        if len(jitter) != 2 or not all(abs(j) <= MAX_JITTER for j in jitter):
            raise ValueError(f"jitter must be two floats in [-{MAX_JITTER}, {MAX_JITTER}], got {self.jitter!r}")
        object.__setattr__(self, "jitter", jitter)

    def as_dict(self) -> dict[str, str]:
        """{"shape": ..., "colour": ..., "size": ..., "position": ...}."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


@dataclass(frozen=True)
class Scene:
    """One or two objects (in distinct grid cells) on a plain background colour."""

    objects: tuple[ShapeObject, ...]  # one or two objects, drawn in this order
    background: tuple[int, int, int] = (238, 238, 232)  # sRGB 0–255, a light colour

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        object.__setattr__(self, "objects", objects)
        if not 1 <= len(objects) <= 2 or not all(isinstance(o, ShapeObject) for o in objects):
            raise ValueError(f"objects must be one or two ShapeObject, got {self.objects!r}")
        if len({o.position for o in objects}) != len(objects):
            raise ValueError(f"objects must sit in distinct grid cells, got {[o.position for o in objects]}")
        bg = tuple(int(c) for c in self.background)
        if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
            raise ValueError(f"background must be three ints in 0..255, got {self.background!r}")
        object.__setattr__(self, "background", bg)


def scene_attributes(scene: Scene) -> list[dict[str, str]]:
    """The attributes of every object of `scene`, as a list of dicts (ground truth)."""
    return [o.as_dict() for o in scene.objects]


def relations_between(first: ShapeObject, second: ShapeObject) -> list[str]:
    """The relations (of `RELATIONS`) that hold for "<first> <relation> <second>" by grid cell."""
    (r1, c1), (r2, c2) = position_cell(first.position), position_cell(second.position)
    holds = {"left of": c1 < c2, "right of": c1 > c2, "above": r1 < r2, "below": r1 > r2}
    return [rel for rel in RELATIONS if holds[rel]]


# ---------------------------------------------------------------------------------------
# 3. Caption templates: {field0} is about the first object, {field1} about the second.
# ---------------------------------------------------------------------------------------

ONE_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {size0} {colour0} {shape0} at the {position0}",
    "a {colour0} {shape0}, {size0}, {position0}",
    "{position0}: a {size0} {colour0} {shape0}",
    "there is a {size0} {colour0} {shape0} at the {position0}",
)
TWO_OBJECT_TEMPLATES: tuple[str, ...] = (
    "a {size0} {colour0} {shape0} at the {position0} and a {size1} {colour1} {shape1} at the {position1}",
    "a {size0} {colour0} {shape0} {relation} a {size1} {colour1} {shape1}",
    "a {colour0} {shape0} {relation} a {colour1} {shape1}",
)


def templates_for(num_objects: int) -> tuple[str, ...]:
    """The caption templates for scenes with `num_objects` objects (1 or 2)."""
    if num_objects == 1:
        return ONE_OBJECT_TEMPLATES
    if num_objects == 2:
        return TWO_OBJECT_TEMPLATES
    raise ValueError(f"num_objects must be 1 or 2, got {num_objects!r}")


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator | None:
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def caption(scene: Scene, template: int | None = None, rng: np.random.Generator | int | None = None) -> str:
    """Describe `scene` with one of its templates (`templates_for(len(scene.objects))`).

    `template` is an index into those templates. Left as None, the template is drawn from
    `rng` — or is the first template when `rng` is None too. A relation template uses a
    relation that holds between the two objects (drawn from `rng`, else the first in
    `RELATIONS` order).
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene must be a Scene, got {type(scene).__name__}")
    rng = _as_rng(rng)
    templates = templates_for(len(scene.objects))
    if template is None:
        template = int(rng.integers(len(templates))) if rng is not None else 0
    if not isinstance(template, (int, np.integer)) or not 0 <= template < len(templates):
        raise ValueError(f"template must be an index in 0..{len(templates) - 1}, got {template!r}")
    fields: dict[str, str] = {}
    for k, obj in enumerate(scene.objects):
        fields.update({f"{name}{k}": value for name, value in obj.as_dict().items()})
    if len(scene.objects) == 2:
        holding = relations_between(*scene.objects)
        fields["relation"] = holding[int(rng.integers(len(holding)))] if rng is not None else holding[0]
    return templates[template].format(**fields)


# ---------------------------------------------------------------------------------------
# 4. Parsing captions back into attributes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionAttributes:
    """What a caption states: per object, only the attributes it names; and a relation."""

    objects: tuple[dict[str, str], ...]  # per object {attribute name: value}, stated ones only
    relation: str | None  # "<object 0> <relation> <object 1>", None when not stated
    template: str  # the template the caption matched


_FIELD_VOCAB = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "position": POSITIONS}


def _template_regex(template: str) -> re.Pattern[str]:
    """A template's format string as a regex with one named group per field."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        words = RELATIONS if field == "relation" else _FIELD_VOCAB[field[:-1]]
        # Longest words first, so "top left" is tried before "top".
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        parts.append(f"(?P<{field}>{alternatives})")
    return re.compile("".join(parts))


_PARSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (t, _template_regex(t)) for t in ONE_OBJECT_TEMPLATES + TWO_OBJECT_TEMPLATES
)


def parse_caption(text: str) -> CaptionAttributes:
    """Read the attributes a caption states (inverse of `caption` for every template).

    Case, surrounding spaces, repeated spaces and a final full stop are ignored. A caption
    that matches no template raises ValueError.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    normal = " ".join(text.lower().split()).removesuffix(".")
    for template, pattern in _PARSERS:
        match = pattern.fullmatch(normal)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        num_objects = 2 if any(k.endswith("1") for k in groups) else 1
        objects = tuple(
            {name: groups[f"{name}{k}"] for name in ATTRIBUTES if f"{name}{k}" in groups} for k in range(num_objects)
        )
        return CaptionAttributes(objects=objects, relation=groups.get("relation"), template=template)
    raise ValueError(f"caption {text!r} matches no shapes template (see ONE_OBJECT_TEMPLATES, TWO_OBJECT_TEMPLATES)")


def describes(attrs: CaptionAttributes, objects: Sequence[ShapeObject]) -> bool:
    """True when `objects` (in caption order) have every attribute and relation `attrs` states."""
    if len(objects) != len(attrs.objects):
        return False
    for stated, obj in zip(attrs.objects, objects):
        if any(getattr(obj, name) != value for name, value in stated.items()):
            return False
    return attrs.relation is None or attrs.relation in relations_between(*objects)
