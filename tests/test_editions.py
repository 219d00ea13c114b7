"""The course editions (retrievalkit/editions.py) and the automated exercise check over the real notebooks.

Markup rules on small synthetic notebooks; then, for every graded exercise of notebooks/*.py, the
student's blank solution must make its check say "not written yet" and the instructor's solution must
pass it — both run in-process from the notebook's imports cell, which is all a solution and its check
may rely on (the self-contained rule of the course conventions).
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import matplotlib
import nbformat
import pytest

import retrievalkit as rk
from retrievalkit import editions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SOURCES = editions.sources()

TOY = '''# %%
import numpy as np

# %% [markdown]
# Write a function.

# %% nbgrader={"grade": false, "grade_id": "double", "locked": false, "schema_version": 3, "solution": true}
def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "double_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
assert double(1) == 2
### BEGIN HIDDEN TESTS
assert double(-3) == -6
### END HIDDEN TESTS
print("checked")

# %% [markdown]
# **Question 1.** Why?

# %% [markdown] nbgrader={"grade": true, "grade_id": "q_why", "locked": false, "points": 1, "schema_version": 3, "solution": true}
# Because.
'''


def _write(folder: Path, text: str, name: str = "01_toy.py") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _editions(tmp_path, text=TOY):
    nb = jupytext.read(_write(tmp_path, text))
    return nb, editions.edition(nb, "student", "01_toy.py"), editions.edition(nb, "instructor", "01_toy.py")


def test_student_edition_blanks_solutions_answers_and_hidden_tests(tmp_path):
    _, student, _ = _editions(tmp_path)
    sources = [c.source for c in student.cells]
    assert sources[2] == ('def double(x):\n    """Twice x."""\n'
                          "    # YOUR CODE HERE\n    raise NotImplementedError()")
    assert sources[3] == 'assert double(1) == 2\nprint("checked")'
    assert sources[5] == "YOUR ANSWER HERE"
    assert sources[0] == "import numpy as np" and sources[1] == "Write a function."  # other cells untouched
    assert not any(m in s for s in sources for m in ("BEGIN", "END", "2 * x", "-6", "Because"))


def test_instructor_edition_keeps_everything_but_the_markers(tmp_path):
    _, _, instructor = _editions(tmp_path)
    sources = [c.source for c in instructor.cells]
    assert sources[2] == 'def double(x):\n    """Twice x."""\n    y = 2 * x\n    return y'
    assert sources[3] == 'assert double(1) == 2\nassert double(-3) == -6\nprint("checked")'
    assert sources[5] == "Because."
    assert not any("SOLUTION" in s or "HIDDEN TESTS" in s for s in sources)


def test_student_solution_stub_takes_the_indentation_of_its_begin_line(tmp_path):
    text = TOY.replace("    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION\n",
                       "    if x:\n        ### BEGIN SOLUTION\n        return 2 * x\n        ### END SOLUTION\n    return 0\n")
    _, student, instructor = _editions(tmp_path, text)
    assert student.cells[2].source.endswith(
        "    if x:\n        # YOUR CODE HERE\n        raise NotImplementedError()\n    return 0")
    assert instructor.cells[2].source.endswith("    if x:\n        return 2 * x\n    return 0")


def test_both_editions_keep_nbgrader_metadata_and_validate(tmp_path):
    source, student, instructor = _editions(tmp_path)
    for built in (student, instructor):
        nbformat.validate(built)
        assert [c.metadata.get("nbgrader") for c in built.cells] == [c.metadata.get("nbgrader") for c in source.cells]
        assert "jupytext" not in built.metadata
    assert [e.grade_id for e in editions.exercises(student)] == ["double"]


def _exec_code(nb, upto: int) -> dict:
    namespace = {}
    for cell in nb.cells[:upto]:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
    return namespace


def test_instructor_toy_passes_its_check_and_student_toy_does_not(tmp_path, capsys):
    _, student, instructor = _editions(tmp_path)
    _exec_code(instructor, 4)
    assert capsys.readouterr().out == "checked\n"
    with pytest.raises(NotImplementedError):
        _exec_code(student, 4)


BAD = {
    "begin_without_end": (TOY.replace("    ### END SOLUTION\n", ""), r"cell 3 \(grade_id 'double'\).*never closed"),
    "end_without_begin": (TOY.replace("    ### BEGIN SOLUTION\n", ""), r"cell 3 .*END SOLUTION` without"),
    "nested_begin": (TOY.replace("    return y\n", "    ### BEGIN SOLUTION\n    return y\n"), r"cell 3 .*nest"),
    "hidden_unclosed": (TOY.replace("### END HIDDEN TESTS\n", ""), r"cell 4 .*HIDDEN TESTS` is never closed"),
    "region_without_solution_metadata": (
        TOY.replace('"solution": true}\ndef', '"solution": false}\ndef'), r'cell 3 .*lacks "solution": true'),
    "region_in_plain_cell": (TOY.replace("# %%\nimport numpy as np\n", "# %%\nimport numpy as np\n### BEGIN SOLUTION\nx = 1\n"
                                         "### END SOLUTION\n"), r"cell 1 \('import numpy as np'\).*lacks"),
    "duplicate_grade_id": (TOY.replace('"grade_id": "q_why"', '"grade_id": "double"'),
                           r"cell 6 .*'double' is already used by cell 3"),
    "check_without_solution": (TOY.replace('"grade_id": "double_check"', '"grade_id": "triple_check"'),
                               r"cell 4 \(grade_id 'triple_check'\).*solution cell before it.*'triple'"),
    "check_before_solution": (
        TOY.replace('"grade_id": "double"', '"grade_id": "later"'), r"cell 4 .*solution cell before it"),
    "check_not_named_after_solution": (TOY.replace('"grade_id": "double_check"', '"grade_id": "test_double"'),
                                       r"cell 4 .*'<solution id>_check'"),
    "grader_cell_without_grade_id": (TOY.replace('"grade_id": "q_why", ', ""), r"cell 6 .*without a grade_id"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_malformed_markup_is_an_error_naming_notebook_and_cell(tmp_path, case):
    text, message = BAD[case]
    nb = jupytext.read(_write(tmp_path, text))
    for which in editions.EDITIONS:
        with pytest.raises(editions.MarkupError, match=r"^01_toy\.py, " + message):
            editions.edition(nb, which, "01_toy.py")


def test_build_writes_both_editions_and_refuses_malformed_sources(tmp_path, capsys):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    _write(notebooks, TOY, "00_a.py")
    _write(notebooks, TOY.replace("double", "half"), "01_b.py")
    for which in editions.EDITIONS:
        assert editions.main([which, "--out", str(tmp_path / which), "--notebooks", str(notebooks)]) == 0
        assert sorted(p.name for p in (tmp_path / which).iterdir()) == ["00_a.ipynb", "01_b.ipynb"]
    assert "student edition: 2 notebooks, 2 graded exercises" in capsys.readouterr().out
    first = (tmp_path / "student" / "00_a.ipynb").read_text()
    editions.build("student", tmp_path / "student", notebooks)
    assert (tmp_path / "student" / "00_a.ipynb").read_text() == first, "a rebuild should write the same file"
    assert "raise NotImplementedError()" in first and "2 * x" not in first
    _write(notebooks, BAD["duplicate_grade_id"][0], "02_c.py")
    with pytest.raises(SystemExit) as exit_:
        editions.main(["student", "--out", str(tmp_path / "again"), "--notebooks", str(notebooks)])
    assert exit_.value.code == 1 and "02_c.py, cell 6" in capsys.readouterr().err
    assert not (tmp_path / "again").exists(), "nothing is written when a source is malformed"


# ---------------------------------------------------------------- the real notebooks


def _read(source: Path):
    return jupytext.read(source)


def _pairs():
    pairs = []
    for source in SOURCES:
        try:
            found = editions.exercises(_read(source), source.name)
        except editions.MarkupError:
            continue  # test_real_markup_is_well_formed fails for this notebook, naming the cell
        pairs += [pytest.param(source, ex.grade_id, id=f"{source.stem}-{ex.grade_id}") for ex in found]
    return pairs


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_real_markup_is_well_formed(source):
    nb = _read(source)
    editions.exercises(nb, source.name)  # raises MarkupError naming the cell
    unmarked = [i + 1 for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and "rk.grading.check(" in c.source and not editions.is_check(c)]
    assert not unmarked, (f"{source.name}: cells {unmarked} call rk.grading.check but are not check cells: give them "
                          'nbgrader={"grade": true, "grade_id": "<solution id>_check", "solution": false, ...}')


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
@pytest.mark.parametrize("which", editions.EDITIONS)
def test_real_editions_are_valid_nbformat(source, which):
    nbformat.validate(editions.edition(_read(source), which, source.name))


def _imports(nb, source: Path) -> str:
    first = next(c for c in nb.cells if c.cell_type == "code" and c.source.strip())  # jupytext may add an empty one
    assert not (editions.is_solution(first) or editions.is_grade(first)), \
        f"{source.name}: the first code cell must be the imports cell, not an exercise"
    return first.source


def _run(source: Path, grade_id: str, which: str):
    """Exec the imports cell, then ``which`` edition's solution cell and check cell of ``grade_id``."""
    nb = _read(source)
    exercise = next(e for e in editions.exercises(nb, source.name) if e.grade_id == grade_id)
    convert = editions.student_source if which == "student" else editions.instructor_source
    namespace = {"__name__": f"{source.stem}_{grade_id}"}
    exec(compile(_imports(nb, source), f"{source.name}:imports", "exec"), namespace)
    try:
        exec(compile(convert(nb.cells[exercise.solution]), f"{source.name}:{grade_id}", "exec"), namespace)
    except NotImplementedError:
        pytest.fail(f"{source.name}, exercise {grade_id!r}: the student's solution cell raises as soon as it runs; "
                    "put the solution region inside a function so that the check cell reports it instead")
    exec(compile(convert(nb.cells[exercise.check]), f"{source.name}:{grade_id}_check", "exec"), namespace)


GRADED_TOY = '''# %%
import numpy as np

import retrievalkit as rk

# %% nbgrader={"grade": false, "grade_id": "norm", "locked": false, "schema_version": 3, "solution": true}
def my_norm(x):
    """L2 norm of a vector."""
    ### BEGIN SOLUTION
    return float(np.sqrt((x ** 2).sum()))
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "norm_check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
gen = np.random.default_rng(0)
rk.grading.check(my_norm, np.linalg.norm, [(gen.normal(size=5),) for _ in range(3)])
'''


def test_the_exercise_harness_fails_a_wrong_solution_and_reports_a_blank_one(tmp_path):
    right = _write(tmp_path, GRADED_TOY, "01_right.py")
    _run(right, "norm", "instructor")
    with pytest.raises(rk.grading.ExerciseError, match="not written yet"):
        _run(right, "norm", "student")
    wrong = _write(tmp_path, GRADED_TOY.replace("(x ** 2).sum()", "(x ** 2).mean()"), "01_wrong.py")
    with pytest.raises(rk.grading.ExerciseError, match="times"):
        _run(wrong, "norm", "instructor")


@pytest.fixture
def in_notebooks(monkeypatch):
    monkeypatch.chdir(editions.NOTEBOOKS)  # where nbmake runs the notebooks
    yield
    plt.close("all")


@pytest.mark.parametrize("source, grade_id", _pairs())
def test_student_solution_is_reported_not_written_yet(source, grade_id, in_notebooks):
    with pytest.raises(rk.grading.ExerciseError, match="not written yet"):
        _run(source, grade_id, "student")


@pytest.mark.parametrize("source, grade_id", _pairs())
def test_instructor_solution_passes_its_check(source, grade_id, in_notebooks):
    _run(source, grade_id, "instructor")


def test_there_are_graded_exercises():
    assert _pairs(), "no graded exercise in notebooks/*.py: nothing for the two tests above to check"


COURSE = [s for s in SOURCES if re.match(r"(0[1-9]|1[01])_", s.name)]


@pytest.mark.parametrize("source", COURSE, ids=lambda p: p.stem)
def test_each_course_notebook_has_three_graded_exercises(source):
    found = editions.exercises(_read(source), source.name)
    assert len(found) >= 3, (f"{source.name} has {len(found)} graded exercise(s) "
                             f"{[e.grade_id for e in found]}; the course asks for at least 3")
