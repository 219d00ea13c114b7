"""Shared fixtures: the read-only ../shared folder, a COIL-100 data home extracted once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETRIEVALKIT_SHARED", REPO.parent / "shared"))
MIRROR = SHARED / "mirror"
SAMPLES = SHARED / "samples"


@pytest.fixture(scope="session")
def shared_mirror() -> Path:
    if not (MIRROR / "coil-100.zip").is_file():
        pytest.fail(f"the test mirror is missing: expected {MIRROR}/coil-100.zip (../shared beside the checkout)")
    return MIRROR


def _fetch_from_mirror(name: str, home: Path, mirror: Path) -> Path:
    """Fetch ``name`` into ``home`` through the data hub's real path: present files → mirror → URLs."""
    from retrievalkit.datasets import download

    old = os.environ.get("RETRIEVALKIT_MIRROR")
    os.environ["RETRIEVALKIT_MIRROR"] = str(mirror)
    try:
        return download.ensure(name, home, download=False, progress=False)
    finally:
        if old is None:
            os.environ.pop("RETRIEVALKIT_MIRROR", None)
        else:
            os.environ["RETRIEVALKIT_MIRROR"] = old


@pytest.fixture(scope="session")
def coil_home(tmp_path_factory, shared_mirror) -> Path:
    """A data home with COIL-100 fetched through the real mirror → verify → extract path, once per session."""
    home = tmp_path_factory.mktemp("coil_home")
    _fetch_from_mirror("coil100", home, shared_mirror)
    return home


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory, shared_mirror) -> Path:
    """The folder holding the four Fashion-MNIST files, as the data hub finds them (never a hard-coded system path)."""
    if not (shared_mirror / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the test mirror lacks Fashion-MNIST: expected {shared_mirror}/train-images-idx3-ubyte.gz")
    return _fetch_from_mirror("fashion_mnist", tmp_path_factory.mktemp("fashion_home"), shared_mirror)
