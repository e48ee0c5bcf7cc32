"""Automatic checks for the classroom exercises at the end of each notebook.

An exercise gives the student a function to write, whose body starts as
``raise NotImplementedError``. The check cell calls `check`, which compares the student's
function with the course's reference on a few fixed inputs:

* not attempted yet (NotImplementedError) → a friendly note, no error, so the notebook still
  runs top to bottom;
* correct → ``"<name>: correct"``;
* wrong → an AssertionError that says which input differed and by how much.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

__all__ = ["check"]


def _compare(got: Any, want: Any, atol: float, rtol: float) -> str | None:
    """None when `got` matches `want`, else a short description of the difference."""
    if torch.is_tensor(want):
        if not torch.is_tensor(got):
            return f"expected a tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)} != expected {tuple(want.shape)}"
        if not torch.allclose(got.double(), want.double(), atol=atol, rtol=rtol):
            err = (got.double() - want.double()).abs().max().item()
            return f"values differ (max abs error {err:.3g})"
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a sequence of {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = _compare(g, w, atol, rtol)
            if msg:
                return f"item {i}: {msg}"
        return None
    if isinstance(want, float):
        return None if abs(float(got) - want) <= atol + rtol * abs(want) else f"{got!r} != expected {want!r}"
    return None if got == want else f"{got!r} != expected {want!r}"


def check(
    name: str,
    candidate: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[tuple],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> bool:
    """Check `candidate` against `reference` on each tuple of arguments in `cases`.

    Returns True when every case matches, False when the exercise is not attempted yet;
    raises AssertionError (naming the case) when an answer is wrong.
    """
    for i, args in enumerate(cases):
        try:
            got = candidate(*args)
        except NotImplementedError:
            print(f"{name}: not attempted yet — write the function above and run this cell again")
            return False
        want = reference(*args)
        msg = _compare(got, want, atol, rtol)
        if msg:
            raise AssertionError(f"{name}: case {i} is wrong: {msg}")
    print(f"{name}: correct ({len(cases)} cases)")
    return True
