"""Automatic checks for the classroom exercises at the end of each notebook.

An exercise gives the student a function to write, whose body starts as
``raise NotImplementedError``. The check cell calls `check`, which compares the student's
function with the course's reference on a few fixed inputs and prints one verdict:

* not attempted yet (NotImplementedError) → a friendly note, so the notebook still runs top to
  bottom with the stubs left in;
* correct → ``"<name>: correct (N cases)"``;
* wrong → which input (described by shape, dtype and, when small, its values), what came back
  and how it differs from what was expected: the shape, the dtype, or where the largest error
  sits and how many entries are off. Expected values are shown only when they are a handful of
  numbers; the reference itself is never printed;
* an exception inside the student's code → its type and message, translated into a hint when it
  is one of PyTorch's usual shape or dtype complaints.

A wrong answer does not raise: every check in a cell runs and reports. `check_all` runs several
checks and ends with a summary line (``2 of 3 passed, 1 not attempted yet``).

**Named exercises.** The course's exercises are registered by name (``"02.posterior_variance"``:
lesson number, a dot, a short name) in the package folder ``dalle_mini_core/lessons/`` (one module
per lesson), each with its reference, its seeded cases, a hint and the plausible wrong answers the
test suite feeds it. A
notebook's check cell then shows no reference at all::

    check_exercise("02.posterior_variance", posterior_variance)

Three kinds of exercise (`KINDS`): *implement* a piece the notebook did not show, *find the bug*
in a broken function the notebook shows (the check compares the fixed version with the
reference), and *predict, then measure*: the student writes down a prediction (one of a few
lettered options) before running a measurement, and `check_prediction` compares the prediction
with what the measurement says and explains why::

    check_prediction("05.few_steps", my_prediction, measured=clean_share_at_5_steps)

`summary(results)` prints the cell's or lesson's tally.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["CheckResult", "Exercise", "KINDS", "check", "check_all", "check_exercise", "check_prediction",
           "compare", "describe_value", "exercise", "get_exercise", "lesson_exercises", "register", "summary"]

NOT_ATTEMPTED = "not attempted yet — write the function above and run this cell again"
SMALL = 8  # tensors with at most this many entries are shown in full


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one exercise: ``status`` is correct, wrong, error or not attempted."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "correct"

    def __bool__(self) -> bool:  # `if check(...)` keeps working
        return self.passed

    def __repr__(self) -> str:  # short, for a check left as a cell's last line
        return f"<{self.name}: {self.status}>"


def _fmt_number(x: float) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}"


def describe_value(value: Any) -> str:
    """A short description of an input or output: tensors by dtype and shape (values if small)."""
    if torch.is_tensor(value):
        text = f"tensor {str(value.dtype).replace('torch.', '')} shape {tuple(value.shape)}"
        if value.numel() <= SMALL:
            flat = [_fmt_number(v) for v in value.detach().flatten().tolist()]
            text += f" = [{', '.join(flat)}]"
        return text
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe_value(v) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        kind = "list" if isinstance(value, list) else "tuple"
        return f"{kind} of {len(value)}: ({inner}{more})"
    if isinstance(value, float):
        return _fmt_number(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _compare_tensors(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> str | None:
    if got.shape != want.shape:
        hint = ""
        if got.numel() == want.numel():
            hint = " (same number of entries: a reshape, transpose or missing/extra dimension?)"
        elif got.dim() != want.dim():
            hint = " (a different number of dimensions: check which axis you reduce over or index)"
        return f"returned shape {tuple(got.shape)}, expected shape {tuple(want.shape)}{hint}"
    if want.dtype == torch.bool and got.dtype != torch.bool:
        return f"returned dtype {got.dtype}, expected a boolean tensor (torch.bool)"
    if _is_integer_dtype(want.dtype) and not _is_integer_dtype(got.dtype):
        return f"returned dtype {got.dtype}, expected an integer tensor ({want.dtype}): indices and counts are whole numbers"
    if want.dtype.is_floating_point and not got.dtype.is_floating_point:
        return f"returned dtype {got.dtype}, expected a floating-point tensor ({want.dtype})"
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(g).all() and torch.isfinite(w).all():
        bad = (~torch.isfinite(g)).sum().item()
        return f"{bad} of {g.numel()} returned values are NaN or infinite (a division by zero, or log/sqrt of a non-positive number?)"
    if torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
        return None
    err = (g - w).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)
    off = (err > atol + rtol * w.abs()).sum().item()
    if g.numel() <= SMALL:
        # the original tensors' values, so integer ids print as whole numbers (49406, not 4.941e+04)
        got_s = ", ".join(_fmt_number(v) for v in got.detach().cpu().flatten().tolist())
        want_s = ", ".join(_fmt_number(v) for v in want.detach().cpu().flatten().tolist())
        msg = f"returned [{got_s}], expected [{want_s}]"
    else:
        flat = int(err.flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), g.shape)) if g.dim() else ()
        msg = (f"{off} of {g.numel()} entries are off; the largest error is at index {index}: "
               f"returned {_fmt_number(g.flatten()[flat].item())}, expected {_fmt_number(w.flatten()[flat].item())}")
    if torch.allclose(g, -w, atol=atol, rtol=rtol):
        msg += " (every value has the wrong sign)"
    elif g.numel() > 1 and w.abs().max() > 0 and torch.allclose(g * (w.norm() / g.norm().clamp_min(1e-30)), w, atol=atol * 10, rtol=rtol * 10):
        msg += f" (right up to a constant factor of about {_fmt_number((g.norm() / w.norm()).item())})"
    return msg


def compare(got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None when `got` matches `want`, else a sentence that says how it differs."""
    if torch.is_tensor(want):
        if not torch.is_tensor(got):
            return f"returned {type(got).__name__} ({describe_value(got)}), expected a tensor of shape {tuple(want.shape)}"
        return _compare_tensors(got, want, atol, rtol)
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"returned {type(got).__name__}, expected a {type(want).__name__} of {len(want)} items"
        if len(got) != len(want):
            return f"returned {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = compare(g, w, atol, rtol)
            if msg:
                return f"item {i}: {msg}"
        return None
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return None if got == want else f"returned {got!r}, expected {want!r}"
    if isinstance(want, (int, float)):
        if torch.is_tensor(got) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"returned {type(got).__name__} ({describe_value(got)}), expected a number"
        if isinstance(want, int) and isinstance(got, float) and not float(got).is_integer():
            return f"returned {_fmt_number(got)}, expected the whole number {want}"
        if abs(float(got) - float(want)) <= atol + rtol * abs(float(want)):
            return None
        return f"returned {_fmt_number(got)}, expected {_fmt_number(want)}"
    return None if got == want else f"returned {describe_value(got)}, expected {describe_value(want)}"


_ERROR_HINTS = (
    ("must match the size of tensor", "two tensors' shapes do not broadcast: print the shapes just before the failing line; a missing [:, None] or a reshape to (batch, 1, 1, 1) is the usual fix"),
    ("cannot be multiplied", "the matrix product's inner dimensions differ: check which tensor needs a transpose"),
    ("expected scalar type", "two tensors have different dtypes: convert one with .to(other.dtype)"),
    ("Expected all tensors to be on the same device", "tensors live on different devices: create new tensors with device=x.device"),
    ("out of range", "an index is outside its dimension: check the off-by-one (t counts from 0)"),
    ("only integer tensors", "an index must be an integer tensor: use .long()"),
)


def _explain_exception(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    for needle, hint in _ERROR_HINTS:
        if needle in str(exc):
            return f"{text} — hint: {hint}"
    return text


def _describe_case(args: tuple) -> str:
    return "(" + ", ".join(describe_value(a) for a in args) + ")"


def check(
    name: str,
    candidate: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[tuple],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: str | None = None,
    quiet: bool = False,
) -> CheckResult:
    """Check `candidate` against `reference` on each tuple of arguments in `cases`.

    Prints one verdict and returns a `CheckResult` (truthy only when every case matched). A wrong
    answer or an exception in the student's code is reported, not raised, so the other checks of
    the cell still run. `hint` is shown with a wrong answer: point at the idea, not the code.
    """
    if not cases:
        raise ValueError(f"{name}: a check needs at least one case")
    result: CheckResult | None = None
    for i, args in enumerate(cases):
        args = tuple(args)
        try:
            got = candidate(*args)
        except NotImplementedError:
            result = CheckResult(name, "not attempted", f"{name}: {NOT_ATTEMPTED}")
            break
        except Exception as exc:  # the student's code failed: explain, don't crash the cell
            where = f"case {i + 1} of {len(cases)}, input {_describe_case(args)}"
            result = CheckResult(name, "error", f"{name}: your function raised on {where}: {_explain_exception(exc)}")
            break
        want = reference(*args)
        msg = compare(got, want, atol, rtol)
        if msg:
            text = f"{name}: wrong on case {i + 1} of {len(cases)}, input {_describe_case(args)}: {msg}"
            if hint:
                text += f"\n  hint: {hint}"
            result = CheckResult(name, "wrong", text)
            break
    if result is None:
        result = CheckResult(name, "correct", f"{name}: correct ({len(cases)} cases)")
    if not quiet:
        print(result.message)
    return result


def summary(results: Sequence[CheckResult], quiet: bool = False) -> str:
    """The tally line for several verdicts: ``2 of 3 passed, 1 not attempted yet``."""
    passed = sum(r.passed for r in results)
    pending = sum(r.status == "not attempted" for r in results)
    line = f"{passed} of {len(results)} passed"
    if pending:
        line += f", {pending} not attempted yet"
    if not quiet:
        print(line)
    return line


def check_all(*checks: dict) -> list[CheckResult]:
    """Run several checks (each a dict of `check`'s arguments) and print a summary line."""
    results = [check(**spec) for spec in checks]
    summary(results)
    return results


# --------------------------------------------------------------------------------------------
# Named exercises: references live in the package (dalle_mini_core/lessons/), looked up by name.
# --------------------------------------------------------------------------------------------

KINDS = ("implement", "find the bug", "predict")


@dataclass(frozen=True)
class Exercise:
    """One registered exercise.

    For *implement* and *find the bug*: ``reference`` is the correct function and ``cases()``
    returns the argument tuples it is checked on (seeded: the same every run). For *predict*:
    ``options`` maps a letter to a possible outcome and ``judge(measured)`` returns the letter the
    measurement supports and a sentence explaining why.

    ``wrong`` lists plausible wrong answers, as ``(label, function)`` for the first two kinds and
    ``(label, (prediction, measured))`` for *predict*; the test suite checks that each one is
    rejected, with a message that says what is wrong. ``buggy``, for *find the bug*, is the broken
    function the notebook shows (the test suite checks it is rejected too).
    """

    name: str
    kind: str
    title: str
    hint: str
    reference: Callable[..., Any] | None = None
    cases: Callable[[], Sequence[tuple]] | None = None
    atol: float = 1e-5
    rtol: float = 1e-4
    wrong: tuple = ()
    buggy: Callable[..., Any] | None = None
    options: dict[str, str] | None = None
    judge: Callable[[Any], tuple[str, str]] | None = None

    @property
    def lesson(self) -> str:
        return self.name.split(".", 1)[0]


_REGISTRY: dict[str, Exercise] = {}


def _validate_name(name: str) -> str:
    lesson, _, short = name.partition(".")
    if not (len(lesson) == 2 and lesson.isdigit() and short and short.isidentifier()):
        raise ValueError(f"exercise names look like '02.posterior_variance' (lesson, dot, identifier), not {name!r}")
    return lesson


def register(ex: Exercise) -> Exercise:
    """Add an exercise to the registry (each name once; the kind must be one of `KINDS`)."""
    _validate_name(ex.name)
    if ex.kind not in KINDS:
        raise ValueError(f"{ex.name}: kind must be one of {KINDS}, not {ex.kind!r}")
    if ex.kind == "predict":
        if not ex.options or ex.judge is None:
            raise ValueError(f"{ex.name}: a predict exercise needs options and judge")
    elif ex.reference is None or ex.cases is None:
        raise ValueError(f"{ex.name}: an {ex.kind} exercise needs a reference and cases")
    if ex.kind == "find the bug" and ex.buggy is None:
        raise ValueError(f"{ex.name}: a find-the-bug exercise needs the buggy function it shows")
    old = _REGISTRY.get(ex.name)
    if old is not None and old != ex:
        raise ValueError(f"exercise {ex.name!r} is registered twice")
    _REGISTRY[ex.name] = ex
    return ex


def exercise(name: str, kind: str, title: str, hint: str, cases: Callable[[], Sequence[tuple]], **kw: Any):
    """Decorator: register the decorated function as the reference of an implement/find-the-bug exercise."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(Exercise(name=name, kind=kind, title=title, hint=hint, reference=fn, cases=cases, **kw))
        return fn

    return wrap


def _load_lesson(lesson: str) -> None:
    import importlib

    try:
        importlib.import_module(f"dalle_mini_core.lessons.lesson_{lesson}")
    except ModuleNotFoundError as exc:
        if exc.name != f"dalle_mini_core.lessons.lesson_{lesson}":
            raise


def get_exercise(name: str) -> Exercise:
    """The registered exercise called `name` (its lesson's module is imported on first use)."""
    lesson = _validate_name(name)
    if name not in _REGISTRY:
        _load_lesson(lesson)
    if name not in _REGISTRY:
        known = ", ".join(sorted(n for n in _REGISTRY if n.startswith(lesson + "."))) or "none"
        raise KeyError(f"no exercise called {name!r}; lesson {lesson} has: {known}")
    return _REGISTRY[name]


def lesson_exercises(lesson: str) -> list[Exercise]:
    """Every exercise registered for a lesson ("02"), in registration order."""
    _load_lesson(lesson)
    return [ex for ex in _REGISTRY.values() if ex.lesson == lesson]


def check_exercise(name: str, candidate: Callable[..., Any], quiet: bool = False) -> CheckResult:
    """Check the student's function for the exercise `name` against the package's reference."""
    ex = get_exercise(name)
    if ex.kind == "predict":
        raise TypeError(f"{name} is a predict-then-measure exercise: use check_prediction({name!r}, prediction, measured)")
    return check(ex.title, candidate, ex.reference, list(ex.cases()), atol=ex.atol, rtol=ex.rtol,
                 hint=ex.hint, quiet=quiet)


def check_prediction(name: str, prediction: Any, measured: Any, quiet: bool = False) -> CheckResult:
    """Compare a written prediction (an option letter, or None if not made yet) with a measurement.

    The verdict always explains what the measurement shows; a wrong prediction is reported, not
    raised. A prediction that is not one of the options is an error that lists them.
    """
    ex = get_exercise(name)
    if ex.kind != "predict":
        raise TypeError(f"{name} is an {ex.kind} exercise: use check_exercise({name!r}, your_function)")
    assert ex.options is not None and ex.judge is not None
    if prediction is None or prediction is NotImplemented or prediction is ...:
        result = CheckResult(ex.title, "not attempted",
                             f"{ex.title}: not attempted yet — write your prediction (one of "
                             f"{', '.join(repr(k) for k in ex.options)}) before you look at the measurement")
    else:
        key = str(prediction).strip().lower().strip("()")
        options = {k.lower(): k for k in ex.options}
        if key not in options:
            listed = "; ".join(f"{k!r}: {v}" for k, v in ex.options.items())
            result = CheckResult(ex.title, "error", f"{ex.title}: {prediction!r} is not one of the options ({listed})")
        else:
            key = options[key]
            try:
                right, why = ex.judge(measured)
            except Exception as exc:  # a measurement of the wrong kind: explain, don't crash
                result = CheckResult(ex.title, "error",
                                     f"{ex.title}: the measurement passed in could not be read ({_explain_exception(exc)}); "
                                     f"pass the value the measurement cell printed")
            else:
                if key == right:
                    result = CheckResult(ex.title, "correct", f"{ex.title}: your prediction ({key}) matches the measurement. {why}")
                else:
                    result = CheckResult(ex.title, "wrong",
                                         f"{ex.title}: you predicted ({key}) {ex.options[key]}, but the measurement "
                                         f"says ({right}) {ex.options[right]}. {why}")
    if not quiet:
        print(result.message)
    return result
