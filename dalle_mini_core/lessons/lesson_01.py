"""Lesson 01 (datasets): exercise references, cases and plausible wrong answers."""
from __future__ import annotations

import torch

from dalle_mini_core.data.attributes import POSITIONS, ShapeObject, relations_between
from dalle_mini_core.data.tokens import EOT_TOKEN, SOT_TOKEN
from dalle_mini_core.exercises import Exercise, exercise, register

# ------------------------------------------------------------------------------------------------
# 1. Implement: the grid cell of a point
# ------------------------------------------------------------------------------------------------


def _grid_cases():
    return [(5.0, 5.0, 32), (16.0, 30.0, 32), (31.9, 11.0, 32), (64.0, 21.4, 64), (10.0, 50.0, 64)]


def _no_far_edge(x, y, size):  # a point on the far edge gets column 3, which runs into the next row
    col, row = int(x // (size / 3)), int(y // (size / 3))
    return POSITIONS[(3 * row + col) % len(POSITIONS)]


def _row_from_x(x, y, size):  # x and y swapped: the row read from x
    col, row = (min(int(v // (size / 3)), 2) for v in (y, x))
    return POSITIONS[3 * row + col]


@exercise("01.grid_cell", "implement", "grid cell",
          hint="the column comes from x and the row from y; a cell is size/3 pixels wide; a point on the far edge "
               "(x == size) belongs to the last cell, so clamp the index to 2; POSITIONS lists the cells row by row",
          cases=_grid_cases,
          wrong=(("a point on the far edge not clamped", _no_far_edge),
                 ("row taken from x", _row_from_x)))
def grid_cell(x: float, y: float, size: int) -> str:
    col, row = (min(int(v // (size / 3)), 2) for v in (x, y))
    return POSITIONS[3 * row + col]


# ------------------------------------------------------------------------------------------------
# 2. Find the bug: relations between two grid cells (image rows count downwards)
# ------------------------------------------------------------------------------------------------

RELATIONS = ("left of", "right of", "above", "below")


def _relation_cases():
    picks = ("top left", "centre", "bottom", "top", "right", "bottom right")
    return [(a, b) for a in picks for b in picks if a != b]


def buggy_relations(first_position: str, second_position: str) -> list[str]:
    """The broken version notebook 01 shows (rows compared the wrong way round)."""
    r1, c1 = divmod(POSITIONS.index(first_position), 3)
    r2, c2 = divmod(POSITIONS.index(second_position), 3)
    holds = {"left of": c1 < c2, "right of": c1 > c2, "above": r1 > r2, "below": r1 < r2}
    return [rel for rel in RELATIONS if holds[rel]]


def _non_strict(first_position, second_position):  # the same column counts as "left of"
    r1, c1 = divmod(POSITIONS.index(first_position), 3)
    r2, c2 = divmod(POSITIONS.index(second_position), 3)
    holds = {"left of": c1 <= c2, "right of": c1 > c2, "above": r1 < r2, "below": r1 > r2}
    return [rel for rel in RELATIONS if holds[rel]]


@exercise("01.relations", "find the bug", "relations",
          hint="in an image, row 0 is the TOP row and rows count downwards, so the object with the smaller row "
               "index is the higher one",
          cases=_relation_cases, buggy=buggy_relations,
          wrong=(("same column counted as 'left of'", _non_strict),))
def relations(first_position: str, second_position: str) -> list[str]:
    return relations_between(ShapeObject("circle", "red", "small", first_position),
                             ShapeObject("square", "blue", "small", second_position))


# ------------------------------------------------------------------------------------------------
# 3. Implement: a caption's token ids, padded or truncated to the context length
# ------------------------------------------------------------------------------------------------


def _pad_cases():
    return [([320, 3638, 736, 7117], 8),  # "a large red circle": room to spare
            ([320, 1823, 539, 320, 3638, 1449], 8),  # exactly fits: start + 6 + end
            (list(range(400, 420)), 8),  # too long: truncated
            ([], 4)]  # the empty caption


def _float_ids(ids, context_length):  # torch.zeros makes floats: ids are not numbers to average
    out = torch.zeros(context_length)
    full = [SOT_TOKEN] + list(ids) + [EOT_TOKEN]
    full = full[: context_length - 1] + [EOT_TOKEN] if len(full) > context_length else full
    out[: len(full)] = torch.tensor(full, dtype=torch.float32)
    return out


def _cut_end_token(ids, context_length):  # plain slicing loses the end token of a long caption
    full = ([SOT_TOKEN] + list(ids) + [EOT_TOKEN])[:context_length]
    return torch.tensor(full + [0] * (context_length - len(full)), dtype=torch.long)


def _no_start_token(ids, context_length):
    full = list(ids) + [EOT_TOKEN]
    full = full[: context_length - 1] + [EOT_TOKEN] if len(full) > context_length else full
    return torch.tensor(full + [0] * (context_length - len(full)), dtype=torch.long)


def _pad_with_end(ids, context_length):
    full = [SOT_TOKEN] + list(ids) + [EOT_TOKEN]
    full = full[: context_length - 1] + [EOT_TOKEN] if len(full) > context_length else full
    return torch.tensor(full + [EOT_TOKEN] * (context_length - len(full)), dtype=torch.long)


@exercise("01.pad_tokens", "implement", "pad tokens",
          hint=f"start token {SOT_TOKEN}, the caption's ids, end token {EOT_TOKEN}, then zeros up to context_length; "
               f"a caption that is too long keeps its first context_length - 1 ids (start included) and still ends "
               f"with {EOT_TOKEN}; ids are whole numbers, so the tensor is torch.long",
          cases=_pad_cases,
          wrong=(("a float tensor", _float_ids),
                 ("sliced, so a long caption loses its end token", _cut_end_token),
                 ("no start token", _no_start_token),
                 ("padded with the end token", _pad_with_end)))
def pad_tokens(ids: list[int], context_length: int) -> torch.Tensor:
    full = [SOT_TOKEN] + list(ids) + [EOT_TOKEN]
    if len(full) > context_length:
        full = full[: context_length - 1] + [EOT_TOKEN]
    out = torch.zeros(context_length, dtype=torch.long)
    out[: len(full)] = torch.tensor(full, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------------
# 4. Predict, then measure: the reader under five times the noise
# ------------------------------------------------------------------------------------------------

_EXAMPLE_OUTCOMES = {"read fully right": 65, "wrong count (2 objects)": 20, "wrong count (0 objects)": 8,
                     "wrong shape": 5, "wrong shape and size": 2}  # a made-up measurement for the wrong-answer tests
_READER_BANDS = (("a", 0.90, 1.01), ("b", 0.50, 0.90), ("c", 0.10, 0.50), ("d", -0.01, 0.10))


def _judge_reader_noise(measured) -> tuple[str, str]:
    """`measured`: the measurement cell's verdict counts, e.g. {"read fully right": 72, "wrong count (2 objects)": 16,
    "wrong shape": 3, ...} (a verdict "wrong A and B" counts for A and for B)."""
    if not isinstance(measured, dict) or not measured or any(int(v) < 0 for v in measured.values()):
        raise ValueError(f"expected the verdict counts of the measurement cell (a dict like "
                         f"{{'read fully right': 72, 'wrong shape': 3}}), got {measured!r}")
    n = sum(int(v) for v in measured.values())
    share = int(measured.get("read fully right", 0)) / n
    letter = next(k for k, lo, hi in _READER_BANDS if lo <= share < hi)
    errors = {"count": sum(int(v) for k, v in measured.items() if k.startswith("wrong count"))}
    for attribute in ("shape", "colour", "size", "position"):
        errors[attribute] = sum(int(v) for k, v in measured.items()
                                if k.startswith("wrong ") and not k.startswith("wrong count") and attribute in k)
    breakdown = ", ".join(f"{k} {v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))
    why = (f"Measured: {share:.0%} of the {n} one-object scenes were read fully right at noise 0.3 "
           f"(section 4 measured the default noise, 0.06). Scenes with each kind of error: {breakdown}. ")
    if share < 0.9:
        worst = max(errors, key=errors.get)
        why += (f"The most frequent error is the {worst}. The reader calls a pixel foreground when its colour is more "
                "than 0.5 from the background; with noise of standard deviation 0.3 in each of three channels, many "
                "background pixels cross that line by chance")
        if worst == "count":
            why += (", and clumps of them become extra objects (or the object is lost in them), which is why "
                    "the count goes wrong first")
        why += "."
        if errors["colour"] <= min(errors["count"], errors["shape"]):
            why += (f" The colour was wrong in {errors['colour']} of the {n} scenes: it is a median over the object's "
                    "most contrasted pixels, which the noise moves little.")
    else:
        why += "The reader's threshold and plane fit absorb even this much noise on these scenes."
    return letter, why


register(Exercise(
    name="01.reader_noise", kind="predict", title="the reader at five times the noise",
    hint="compare the noise's standard deviation with the reader's foreground threshold of 0.5",
    options={"a": "90% or more of the scenes are still read fully right",
             "b": "50% to 90%", "c": "10% to 50%", "d": "fewer than 10%"},
    judge=_judge_reader_noise,
    wrong=(("noise is only noise: still almost perfect", ("a", _EXAMPLE_OUTCOMES)),
           ("the reader collapses", ("d", _EXAMPLE_OUTCOMES)),
           ("most scenes lost", ("c", _EXAMPLE_OUTCOMES))),
))
