"""rk.grading: each diagnosis a student can meet, and a correct answer passing."""
import numpy as np
import pytest
import torch

from retrievalkit import grading
from retrievalkit.rows import l2n


def _rows(seed=0, n=4, d=3):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_a_correct_answer_passes_and_counts_its_cases(capsys):
    cases = [(_rows(s),) for s in range(3)]
    assert grading.check(lambda x: l2n(x), lambda x: l2n(x), cases, name="l2n") == 3
    assert "l2n: agrees with the library on 3 fresh inputs" in capsys.readouterr().out


def test_torch_tensors_are_compared_by_value():
    grading.compare(torch.ones(2, 3), np.ones((2, 3)))


@pytest.mark.parametrize("student, words", [
    (lambda x: None, "returned None"),
    (lambda x: x.T, "transposed"),
    (lambda x: x.ravel(), "reshape"),
    (lambda x: -l2n(x), "opposite sign"),
    (lambda x: x, "L2 norm 1"),
    (lambda x: np.where(x > 0, np.inf, x), "NaN"),
    (lambda x: np.sort(l2n(x), axis=1), "wrong order"),
])
def test_each_mistake_is_named(student, words):
    x = np.abs(_rows()) + 0.1
    with pytest.raises(grading.ExerciseError, match=words):
        grading.check(student, lambda x: l2n(x), [(x,)], name="norm")


def test_a_constant_factor_is_named():
    x = _rows()
    with pytest.raises(grading.ExerciseError, match=r"times 2"):
        grading.compare(2 * x, x)


def test_other_differences_give_the_place_and_both_values():
    e = np.zeros((2, 2))
    g = e.copy()
    g[1, 0] = 0.5
    with pytest.raises(grading.ExerciseError, match=r"index \(1, 0\).*got 0\.5, expected 0"):
        grading.compare(g, e)


def test_tuples_are_compared_element_by_element():
    grading.compare((1.0, np.arange(3)), (1.0, np.arange(3)))
    with pytest.raises(grading.ExerciseError, match=r"ans\[1\]"):
        grading.compare((1.0, np.arange(3)), (1.0, np.arange(3) + 1.0), name="ans")
    with pytest.raises(grading.ExerciseError, match="2 values"):
        grading.compare(np.arange(3), (1.0, 2.0), name="ans")


def test_an_unwritten_exercise_says_so_without_a_traceback_chain():
    def todo(x):
        raise NotImplementedError()
    with pytest.raises(grading.ExerciseError, match="not written yet") as info:
        grading.check(todo, lambda x: x, [(1.0,)])
    assert info.value.__cause__ is None


def test_a_crash_names_the_error_and_the_case_inputs():
    with pytest.raises(grading.ExerciseError, match=r"ValueError: boom \(case 2: x=array\(4, 3\), k=5\)"):
        grading.check(lambda x, k: (_ for _ in ()).throw(ValueError("boom")) if k == 5 else x,
                      lambda x, k: x, [{"x": _rows(), "k": 1}, {"x": _rows(), "k": 5}])


def test_the_failing_case_is_named():
    with pytest.raises(grading.ExerciseError, match=r"case 2"):
        grading.check(lambda x: x if x.shape[0] == 4 else x + 1, lambda x: x, [(_rows(),), (_rows(n=5),)])


def test_no_cases_is_a_usage_error():
    with pytest.raises(ValueError):
        grading.check(lambda x: x, lambda x: x, [])


def test_an_all_zero_answer_is_named_as_such_not_as_a_factor():
    with pytest.raises(grading.ExerciseError, match="all zeros"):
        grading.compare(np.zeros((2, 3)), _rows(n=2))
