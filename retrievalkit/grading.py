"""Checks for the notebooks' graded exercises: run a student's function beside the library's on fresh
inputs and say in words what differs (shape, row normalisation, sign, scale, order), not only that
something does.

A notebook's exercise cell defines a function between nbgrader's ``### BEGIN SOLUTION`` /
``### END SOLUTION`` markers; the cell after it calls :func:`check`::

    rk.grading.check(my_gem, lambda x: rk.nn.functional.gem(x, p=3), cases=[(x1,), (x2,)], name="GeM")

In the student edition the solution is ``raise NotImplementedError()``, and :func:`check` answers
"not written yet" instead of a traceback.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np


class ExerciseError(AssertionError):
    """A graded exercise's answer differs from the library's; the message says how."""


def _array(value, name: str) -> np.ndarray:
    if value is None:
        raise ExerciseError(f"{name} returned None: is a `return` missing?")
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ExerciseError(f"{name} returned a {type(value).__name__}, which is not a number or an array") from err


def _where(diff: np.ndarray) -> tuple:
    return np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()


def compare(got, expected, *, name: str = "your answer", rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Raise :class:`ExerciseError` explaining how ``got`` differs from ``expected``; return if they agree.

    Tuples and lists are compared element by element; arrays and tensors by value within
    ``rtol``/``atol``. The diagnosis tries, in order: missing value, shape (and whether a transpose
    fixes it), NaN, sign, a constant factor, rows that should have unit L2 norm, right values in the
    wrong order; else the largest difference and where it is.
    """
    if isinstance(expected, (tuple, list)) and not np.isscalar(expected):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise ExerciseError(f"{name} should return {len(expected)} values (a {type(expected).__name__}), "
                                f"got {type(got).__name__}{'' if not hasattr(got, '__len__') else f' of length {len(got)}'}")
        for i, (g, e) in enumerate(zip(got, expected)):
            compare(g, e, name=f"{name}[{i}]", rtol=rtol, atol=atol)
        return
    g, e = _array(got, name), _array(expected, "the library")
    if g.shape != e.shape:
        hint = " (transposed?)" if g.ndim == 2 and g.T.shape == e.shape else ""
        hint = hint or (" (a squeeze or reshape away?)" if g.size == e.size else "")
        raise ExerciseError(f"{name} has shape {g.shape}, expected {e.shape}{hint}")
    if not np.all(np.isfinite(g)) and np.all(np.isfinite(e)):
        bad = int(np.sum(~np.isfinite(g)))
        raise ExerciseError(f"{name} has {bad} NaN or infinite value(s): a division by zero, or log/sqrt of a "
                            "negative number?")
    if np.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
        return
    if np.allclose(-g, e, rtol=rtol, atol=atol):
        raise ExerciseError(f"{name} has the right magnitude but the opposite sign")
    if e.ndim == 2 and e.size and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4):
        norms = np.linalg.norm(g, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ExerciseError(f"each row of {name} should have L2 norm 1, but the norms run from "
                                f"{norms.min():.3g} to {norms.max():.3g}: divide each row by its norm")
    nonzero = np.abs(e) > atol
    if nonzero.any() and np.allclose(g, 0.0, atol=atol):
        raise ExerciseError(f"{name} is all zeros where the library's answer is not: is a step or a `return` "
                            "of the computed value missing?")
    if nonzero.any():
        ratio = g[nonzero] / e[nonzero]
        if np.allclose(ratio, ratio.flat[0], rtol=1e-3) and not np.isclose(ratio.flat[0], 1.0, rtol=rtol):
            raise ExerciseError(f"{name} is the expected value times {ratio.flat[0]:.4g}: a normalisation or a "
                                "constant factor is missing or extra")
    if g.ndim >= 1 and np.allclose(np.sort(g, axis=-1), np.sort(e, axis=-1), rtol=rtol, atol=atol):
        raise ExerciseError(f"{name} holds the right values in the wrong order")
    diff = np.abs(g - e)
    at = _where(diff)
    where = f" at index {tuple(int(i) for i in at)}" if at else ""
    raise ExerciseError(f"{name} differs from the library by up to {diff.max():.4g}{where}: "
                        f"got {g[at]:.6g}, expected {e[at]:.6g}")


def _describe(args: Sequence, kwargs: Mapping) -> str:
    def one(v):
        shape = getattr(v, "shape", None)
        return f"array{tuple(shape)}" if shape is not None else repr(v)
    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


def check(student: Callable, reference: Callable, cases: Iterable, *, name: str | None = None,
          rtol: float = 1e-4, atol: float = 1e-5, quiet: bool = False) -> int:
    """Run ``student`` and ``reference`` on every case and :func:`compare` the answers.

    Each case is a tuple of positional arguments, or a dict of keyword arguments. Returns the number
    of cases checked and prints one line of success; raises :class:`ExerciseError` on the first case
    that differs, naming the case's inputs.
    """
    name = name or getattr(student, "__name__", "your function")
    n = 0
    for n, case in enumerate(cases, 1):
        args, kwargs = ((), case) if isinstance(case, Mapping) else (tuple(case), {})
        try:
            got = student(*args, **kwargs)
        except NotImplementedError:
            raise ExerciseError(f"{name} is not written yet: replace `raise NotImplementedError()` with your code") \
                from None
        except Exception as err:
            raise ExerciseError(f"{name} raised {type(err).__name__}: {err} (case {n}: {_describe(args, kwargs)})") \
                from err
        try:
            compare(got, reference(*args, **kwargs), name=name, rtol=rtol, atol=atol)
        except ExerciseError as err:
            raise ExerciseError(f"{err} (case {n}: {_describe(args, kwargs)})") from None
    if n == 0:
        raise ValueError("check() needs at least one case")
    if not quiet:
        print(f"✓ {name}: agrees with the library on {n} fresh input{'s' if n > 1 else ''}")
    return n


__all__ = ["ExerciseError", "compare", "check"]
