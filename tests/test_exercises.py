"""The exercise checks: every verdict, and messages that say what is wrong without the answer."""
from __future__ import annotations

import torch

from dalle_mini_core.exercises import check, check_all, compare, describe_value


def _square(x):
    return x * x


def test_correct_answer_passes(capsys):
    result = check("square", _square, _square, [(torch.arange(3.0),), (torch.ones(2, 2),)])
    assert result and result.status == "correct"
    assert capsys.readouterr().out.strip() == "square: correct (2 cases)"


def test_stub_reports_not_attempted_without_raising(capsys):
    def stub(x):
        raise NotImplementedError

    result = check("square", stub, _square, [(torch.ones(2),)])
    assert not result and result.status == "not attempted"
    assert "not attempted yet" in capsys.readouterr().out


def test_wrong_values_name_the_case_and_show_small_values(capsys):
    result = check("square", lambda x: x * 2, _square, [(torch.tensor([2.0]),), (torch.tensor([3.0, 1.0]),)])
    out = capsys.readouterr().out
    assert result.status == "wrong"
    assert "case 2 of 2" in out and "shape (2,)" in out
    assert "returned [6, 2], expected [9, 1]" in out


def test_large_tensors_show_where_the_largest_error_sits_not_the_reference(capsys):
    want = torch.zeros(4, 5)
    got = want.clone()
    got[2, 3] = 5.0
    check("zeros", lambda x: got, lambda x: want, [(torch.ones(4, 5),)])
    out = capsys.readouterr().out
    assert "1 of 20 entries are off" in out and "index (2, 3)" in out and "returned 5, expected 0" in out
    assert "tensor([" not in out  # no tensor printout, so the reference never appears


def test_shape_mismatch_is_explained():
    msg = compare(torch.zeros(3, 2), torch.zeros(2, 3))
    assert "returned shape (3, 2), expected shape (2, 3)" in msg and "transpose" in msg
    assert "number of dimensions" in compare(torch.zeros(5), torch.zeros(2, 3, 1))


def test_float_where_an_integer_tensor_was_asked_is_rejected():
    msg = compare(torch.tensor([1.0, 2.0]), torch.tensor([1, 2]))
    assert msg is not None and "integer tensor" in msg


def test_sign_and_scale_mistakes_get_a_hint():
    w = torch.linspace(1, 2, 20)
    assert "wrong sign" in compare(-w, w)
    assert "constant factor of about 2" in compare(2 * w, w)


def test_nan_output_is_called_out():
    assert "NaN or infinite" in compare(torch.tensor([0.0, float("nan")]), torch.tensor([0.0, 1.0]))


def test_exceptions_in_student_code_are_caught_and_explained(capsys):
    def broadcast_bug(x, t):
        return x * t  # (2, 3) * (4,) does not broadcast

    result = check("scale", broadcast_bug, lambda x, t: x, [(torch.ones(2, 3), torch.ones(4))])
    out = capsys.readouterr().out
    assert result.status == "error"
    assert "RuntimeError" in out and "broadcast" in out and "case 1 of 1" in out


def test_numbers_and_sequences():
    assert compare(3, 3) is None and compare(torch.tensor(3), 3) is None
    assert "whole number" in compare(2.5, 2)
    assert compare([1, 2.0], [1, 2.0]) is None
    assert compare([1, 2.5], [1, 2.0]).startswith("item 1:")
    assert "2 items" in compare([1, 2], [1, 2, 3]) or "expected 3" in compare([1, 2], [1, 2, 3])


def test_hint_is_shown_only_with_a_wrong_answer(capsys):
    check("square", _square, _square, [(torch.ones(1),)], hint="multiply x by itself")
    assert "hint" not in capsys.readouterr().out
    check("square", lambda x: x, _square, [(torch.tensor([3.0]),)], hint="multiply x by itself")
    assert "hint: multiply x by itself" in capsys.readouterr().out


def test_check_all_runs_every_check_and_summarises(capsys):
    def stub(x):
        raise NotImplementedError

    results = check_all(
        dict(name="a", candidate=_square, reference=_square, cases=[(torch.ones(1),)]),
        dict(name="b", candidate=lambda x: x + 1, reference=_square, cases=[(torch.ones(1) * 3,)]),
        dict(name="c", candidate=stub, reference=_square, cases=[(torch.ones(1),)]),
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert [r.status for r in results] == ["correct", "wrong", "not attempted"]
    assert out[-1] == "1 of 3 passed, 1 not attempted yet"


def test_describe_value_is_short():
    assert describe_value(torch.arange(3)) == "tensor int64 shape (3,) = [0, 1, 2]"
    assert describe_value(torch.zeros(10, 10)) == "tensor float32 shape (10, 10)"


def test_named_exercise_registry_checks_without_showing_the_reference(capsys):
    from dalle_mini_core.exercises import check_exercise, get_exercise

    ex = get_exercise("02.alphas_cumprod")
    assert check_exercise("02.alphas_cumprod", ex.reference).passed
    result = check_exercise("02.alphas_cumprod", lambda b: b.cumsum(0))
    out = capsys.readouterr().out
    assert result.status == "wrong" and "hint:" in out


def test_unknown_exercise_name_lists_the_lesson_exercises():
    import pytest

    from dalle_mini_core.exercises import get_exercise

    with pytest.raises(KeyError, match="02.alphas_cumprod"):
        get_exercise("02.no_such_thing")
    with pytest.raises(ValueError, match="lesson, dot"):
        get_exercise("posterior")


def test_prediction_verdicts():
    from dalle_mini_core.exercises import Exercise, check_prediction, register

    register(Exercise(name="99.more_steps", kind="predict", title="more steps",
                      hint="", options={"a": "cleaner", "b": "the same"},
                      judge=lambda m: ("a", f"measured {m}") if m > 0.5 else ("b", f"measured {m}")))
    assert check_prediction("99.more_steps", "a", 0.9, quiet=True).passed
    wrong = check_prediction("99.more_steps", "(B)", 0.9, quiet=True)
    assert wrong.status == "wrong" and "measured 0.9" in wrong.message and "cleaner" in wrong.message
    assert check_prediction("99.more_steps", None, 0.9, quiet=True).status == "not attempted"
    assert check_prediction("99.more_steps", "c", 0.9, quiet=True).status == "error"
