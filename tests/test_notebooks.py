"""Every notebook's reviewed .py source and its .ipynb agree, and the .ipynb carries no outputs.

The notebooks themselves run under nbmake (`make test` passes --nbmake with RETRIEVALKIT_SMALL=1).
"""
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert SOURCES, f"no notebooks/NN_*.py found in {NOTEBOOKS}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_matches_py_source(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `make notebooks`"
    committed = nbformat.read(paired, as_version=4)
    assert _cells(committed) == _cells(jupytext.read(source)), (
        f"{paired.name} has drifted from {source.name}: run `make notebooks`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_outputs_are_stripped(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{source.with_suffix('.ipynb').name}: cells {dirty} hold outputs; run `make notebooks`"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_imports_the_package_without_path_hacks(source):
    text = source.read_text()
    assert "import retrievalkit as rk" in text
    assert "sys.path" not in text
