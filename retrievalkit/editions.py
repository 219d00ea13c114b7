"""Two course editions from one source: the student's (exercises blank) and the instructor's (solutions kept).

The notebooks' ``.py`` percent sources carry nbgrader's markup, so an instructor on nbgrader/JupyterHub
can take them as they are:

* a **solution cell** has ``nbgrader={"solution": true, "grade_id": ...}`` metadata; the code between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION`` is what the student writes (a solution cell without
  the markers is replaced as a whole — how a concept question's answer cell is written);
* a **check cell** (``"grade": true, "solution": false``, code) follows its solution cell, with
  ``grade_id`` = the solution's id + ``_check``; lines between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS`` are left out of the student edition.

``python -m retrievalkit.editions student|instructor [--out DIR]`` (``make student`` /
``make instructor``) writes ``build/student/NN_*.ipynb`` — each solution region replaced by
``# YOUR CODE HERE`` + ``raise NotImplementedError()``, each answer cell by ``YOUR ANSWER HERE``, hidden
tests removed — or ``build/instructor/NN_*.ipynb`` — the marker lines removed, everything else kept.
Both keep every cell's ``nbgrader`` metadata.

Why a small builder and not nbgrader itself: nbgrader 0.9.6's ``ClearSolutions`` and
``ClearHiddenTests`` preprocessors do run standalone on a notebook, but installing nbgrader adds
about 80 MB beside this project's Jupyter stack (the classic ``notebook`` server, SQLAlchemy, Alembic,
Mako, RapidFuzz) and pins ``jupyter-client<9``, for two loops over lines. This module reads the same
markup with the same stubs and the same indentation rule (a stub takes the indentation of its
``BEGIN`` line), so both tools write the same student cells from a well-formed source: run on the
course notebooks' 56 solution cells of the time (nbgrader 0.9.6 in a scratch environment), the two
agreed cell for cell. It is
stricter on malformed markup, which it reports instead of building: an ``END`` without its ``BEGIN``
(nbgrader ignores it), a region in a cell without the metadata, a duplicate ``grade_id``, a check
cell without its solution cell before it.
"""
from __future__ import annotations

import argparse
import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

EDITIONS = ("student", "instructor")
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's ClearSolutions.code_stub["python"]
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's ClearSolutions.text_stub
SOLUTION = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TESTS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BUILD = Path(__file__).resolve().parents[1] / "build"


class MarkupError(ValueError):
    """The nbgrader markup of a notebook source is malformed; the message names the notebook and cell."""


@dataclass(frozen=True)
class Exercise:
    """A graded exercise: the solution cell and the check cell after it (indices into ``nb.cells``)."""
    grade_id: str
    solution: int
    check: int


def _grader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_solution(cell) -> bool:
    return bool(_grader(cell).get("solution", False))


def is_grade(cell) -> bool:
    return bool(_grader(cell).get("grade", False))


def is_check(cell) -> bool:
    """An autograder test cell: graded code the student does not write."""
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def _where(name: str, index: int, cell) -> str:
    grade_id = _grader(cell).get("grade_id")
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    label = f" (grade_id {grade_id!r})" if grade_id else f" ({first[:60]!r})"
    return f"{name}, cell {index + 1}{label}"


def _regions(lines: list[str], markers: tuple[str, str], where: str) -> list[bool]:
    """For each line: is it inside (or a delimiter of) a ``markers`` region? Raise on unbalanced markers."""
    begin, end = markers
    inside, flags = False, []
    for number, line in enumerate(lines, 1):
        if begin in line:
            if inside:
                raise MarkupError(f"{where}: line {number} opens `### {begin}` inside an open one "
                                  f"(regions cannot nest; is an `### {end}` missing above it?)")
            inside = True
            flags.append(True)
        elif end in line:
            if not inside:
                raise MarkupError(f"{where}: line {number} has `### {end}` without a `### {begin}` before it")
            inside = False
            flags.append(True)
        else:
            flags.append(inside)
    if inside:
        raise MarkupError(f"{where}: `### {begin}` is never closed by `### {end}`")
    return flags


def _has(cell, markers: tuple[str, str]) -> bool:
    return any(m in cell.source for m in markers)


def exercises(nb, name: str = "notebook") -> list[Exercise]:
    """Validate ``nb``'s markup and return its graded exercises in order.

    Raises :class:`MarkupError` naming the notebook and cell for: unbalanced BEGIN/END markers, a
    solution region in a cell without ``"solution": true``, a hidden-test region in a cell without
    ``"grade": true``, an nbgrader cell without ``grade_id``, a duplicate ``grade_id``, or a check
    cell whose solution cell (``grade_id`` without ``_check``) does not come before it.
    """
    seen: dict[str, int] = {}
    solutions: dict[str, int] = {}
    found = []
    for i, cell in enumerate(nb.cells):
        where = _where(name, i, cell)
        lines = cell.source.split("\n")
        _regions(lines, SOLUTION, where)
        _regions(lines, HIDDEN_TESTS, where)
        if _has(cell, SOLUTION) and not is_solution(cell):
            raise MarkupError(f"{where}: has a `### BEGIN SOLUTION` region but its metadata lacks "
                              '"solution": true — add nbgrader={"grade": false, "grade_id": ..., "solution": true, ...}')
        if _has(cell, HIDDEN_TESTS) and not is_grade(cell):
            raise MarkupError(f"{where}: has a `### BEGIN HIDDEN TESTS` region but its metadata lacks "
                              '"grade": true')
        if not (is_solution(cell) or is_grade(cell)):
            continue
        grade_id = _grader(cell).get("grade_id")
        if not grade_id:
            raise MarkupError(f"{where}: nbgrader cell without a grade_id")
        if grade_id in seen:
            raise MarkupError(f"{where}: grade_id {grade_id!r} is already used by cell {seen[grade_id] + 1}; "
                              "grade_ids must be unique within a notebook")
        seen[grade_id] = i
        if is_solution(cell) and cell.cell_type == "code":
            solutions[grade_id] = i
        if is_check(cell):
            base = grade_id[: -len("_check")] if grade_id.endswith("_check") else None
            if base is None or base not in solutions:
                raise MarkupError(f"{where}: a check cell (grade: true) needs its solution cell before it, with "
                                  f"grade_id {base or grade_id + ' minus _check'!r}"
                                  + ("" if base else f"; name the check '<solution id>_check'"))
            found.append(Exercise(base, solutions[base], i))
    return found


def student_source(cell) -> str:
    """The cell as the student sees it (nbgrader's ClearSolutions + ClearHiddenTests)."""
    lines = cell.source.split("\n")
    hidden = _regions(lines, HIDDEN_TESTS, "cell")
    lines = [line for line, h in zip(lines, hidden) if not h]
    if not is_solution(cell):
        return "\n".join(lines)
    stub = (CODE_STUB if cell.cell_type == "code" else TEXT_STUB).split("\n")
    if not any(SOLUTION[0] in line for line in lines):
        return "\n".join(stub)
    out = []
    for line, inside in zip(lines, _regions(lines, SOLUTION, "cell")):
        if SOLUTION[0] in line:
            indent = re.match(r"\s*", line).group(0)
            out += [indent + s for s in stub]
        elif not inside:
            out.append(line)
    return "\n".join(out)


def instructor_source(cell) -> str:
    """The cell with its marker lines removed and everything else kept."""
    markers = SOLUTION + HIDDEN_TESTS
    return "\n".join(line for line in cell.source.split("\n") if not any(m in line for m in markers))


def edition(nb, which: str, name: str = "notebook"):
    """A new notebook: ``which`` edition of ``nb`` (validated first), with fresh, stable cell ids."""
    if which not in EDITIONS:
        raise ValueError(f"unknown edition {which!r}; choose one of {EDITIONS}")
    exercises(nb, name)
    out = copy.deepcopy(nb)
    out.metadata.pop("jupytext", None)
    convert = student_source if which == "student" else instructor_source
    for i, cell in enumerate(out.cells):
        cell.source = convert(cell)
        cell.id = f"cell-{i:03d}"
        for key in [k for k in cell.metadata if k.startswith("lines_to_")]:  # jupytext layout hints
            del cell.metadata[key]
    nbformat.validate(out)
    return out


def sources(notebooks: Path = NOTEBOOKS) -> list[Path]:
    found = sorted(Path(notebooks).glob("[0-9][0-9]_*.py"))
    if not found:
        raise FileNotFoundError(f"no notebook sources NN_*.py under {notebooks}: pass --notebooks DIR "
                                "(the repository's notebooks/ folder)")
    return found


def build(which: str, out: Path | None = None, notebooks: Path = NOTEBOOKS) -> list[Path]:
    """Write ``which`` edition of every ``notebooks/NN_*.py`` to ``out`` (default ``build/<which>``).

    Every source is validated before anything is written, so a markup error leaves no half-built edition.
    """
    import jupytext

    out = Path(out) if out is not None else BUILD / which
    books = [(path, edition(jupytext.read(path), which, name=str(path))) for path in sources(notebooks)]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in books:
        target = out / f"{path.stem}.ipynb"
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrievalkit.editions", description=__doc__.split("\n")[0])
    parser.add_argument("edition", choices=EDITIONS)
    parser.add_argument("--out", type=Path, help="output folder (default build/<edition>)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help="folder of NN_*.py sources")
    args = parser.parse_args(argv)
    try:
        written = build(args.edition, args.out, args.notebooks)
    except (MarkupError, FileNotFoundError) as err:
        parser.exit(1, f"error: {err}\n")
    n = sum(len(exercises(nbformat.read(p, as_version=4), p.name)) for p in written)
    print(f"{args.edition} edition: {len(written)} notebooks, {n} graded exercises → {written[0].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
