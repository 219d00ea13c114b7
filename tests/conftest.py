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


@pytest.fixture(scope="session")
def coil_home(tmp_path_factory, shared_mirror) -> Path:
    """A data home with COIL-100 fetched through the real mirror → verify → extract path, once per session."""
    from retrievalkit.datasets import download

    home = tmp_path_factory.mktemp("coil_home")
    old = os.environ.get("RETRIEVALKIT_MIRROR")
    os.environ["RETRIEVALKIT_MIRROR"] = str(shared_mirror)
    try:
        download.ensure("coil100", home, download=False, progress=False)
    finally:
        if old is None:
            os.environ.pop("RETRIEVALKIT_MIRROR", None)
        else:
            os.environ["RETRIEVALKIT_MIRROR"] = old
    return home
