"""Every registered exercise: its reference passes its own check, and every plausible wrong answer
(and, for find-the-bug, the broken function the notebook shows) is rejected with a message that
says what is wrong and gives the hint, never the reference."""
from __future__ import annotations

import pkgutil

import pytest

import dalle_mini_core.lessons as lessons
from dalle_mini_core.exercises import check_exercise, check_prediction, lesson_exercises

LESSONS = sorted(m.name.split("_", 1)[1] for m in pkgutil.iter_modules(lessons.__path__) if m.name.startswith("lesson_"))
EXERCISES = [ex for lesson in LESSONS for ex in lesson_exercises(lesson)]


def test_every_lesson_module_registers_exercises():
    assert LESSONS, "no lesson modules found"
    for lesson in LESSONS:
        assert lesson_exercises(lesson), f"lesson {lesson} registers no exercise"


@pytest.mark.parametrize("ex", [e for e in EXERCISES if e.kind != "predict"], ids=lambda e: e.name)
def test_reference_passes_its_own_check(ex):
    assert check_exercise(ex.name, ex.reference, quiet=True).status == "correct"


WRONG = [(ex, label, wrong) for ex in EXERCISES for label, wrong in ex.wrong]
WRONG += [(ex, "the notebook's buggy version", ex.buggy) for ex in EXERCISES if ex.buggy is not None]


def test_every_exercise_has_a_known_wrong_answer():
    missing = [ex.name for ex in EXERCISES if not ex.wrong and ex.buggy is None]
    assert not missing, f"exercises without a plausible wrong answer to test their check: {missing}"


@pytest.mark.parametrize("ex,label,wrong", WRONG, ids=[f"{e.name}-{label}" for e, label, _ in WRONG])
def test_plausible_wrong_answer_is_rejected_with_a_teaching_message(ex, label, wrong):
    if ex.kind == "predict":
        prediction, measured = wrong
        result = check_prediction(ex.name, prediction, measured, quiet=True)
        assert result.status == "wrong", (label, result.message)
        assert "measurement says" in result.message
        right, why = ex.judge(measured)
        assert why and why in result.message
        return
    result = check_exercise(ex.name, wrong, quiet=True)
    assert result.status in ("wrong", "error"), (label, result.message)
    assert ex.title in result.message
    if result.status == "wrong":
        assert "case" in result.message and ex.hint in result.message, result.message
    print(f"{ex.name} [{label}]: {result.message}")


@pytest.mark.parametrize("ex", [e for e in EXERCISES if e.kind == "predict"], ids=lambda e: e.name)
def test_prediction_not_made_yet_is_not_attempted_and_bad_option_is_explained(ex):
    measured = ex.wrong[0][1][1]
    assert check_prediction(ex.name, None, measured, quiet=True).status == "not attempted"
    bad = check_prediction(ex.name, "zz", measured, quiet=True)
    assert bad.status == "error" and "not one of the options" in bad.message


def _named_in(path):
    import json
    import re

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(re.findall(r"check_(?:exercise|prediction)\(\s*[\"'](\d\d\.\w+)[\"']", code))


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_registered_exercise_is_checked_in_its_notebook_and_solved_in_its_solutions(lesson):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "notebooks"
    registered = {ex.name for ex in lesson_exercises(lesson)}
    (notebook,) = root.glob(f"{lesson}_*.ipynb")
    named = _named_in(notebook)
    assert registered <= named, f"{notebook.name} never checks {sorted(registered - named)}"
    assert named <= registered, f"{notebook.name} checks unregistered exercises {sorted(named - registered)}"
    solutions = root / "solutions" / f"{lesson}_solutions.ipynb"
    if solutions.exists():
        solved = _named_in(solutions)
        assert registered <= solved, f"{solutions.name} does not solve {sorted(registered - solved)}"
