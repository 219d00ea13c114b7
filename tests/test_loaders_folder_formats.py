"""The any-folder loader: every file is read or reported, and a folder without queries says so."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrievalkit import evaluate
from retrievalkit.datasets import folder


def _write(path, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (12, 10), 255 if mode in ("1", "L") else (200, 30, 30)).save(path, format=fmt)
    return path


def test_every_file_is_read_or_listed_with_a_reason(tmp_path):
    images = [
        _write(tmp_path / "a" / "one.pbm", "1"),
        _write(tmp_path / "a" / "two.pnm", fmt="PPM"),
        _write(tmp_path / "a" / "three.jfif", fmt="JPEG"),
        _write(tmp_path / "b" / "four.PNG"),
        _write(tmp_path / "b" / "five.jpe", fmt="JPEG"),
    ]
    notes = tmp_path / "a" / "notes.txt"
    notes.write_text("taken in the lab")
    hidden = tmp_path / "b" / ".DS_Store"
    hidden.write_bytes(b"\0\0")
    loose = _write(tmp_path / "loose.png")
    broken = tmp_path / "b" / "six.jpg"
    broken.write_bytes(b"not a jpeg")

    ds = folder.load(tmp_path)
    assert sorted(ds.db_paths) == sorted(images)
    reasons = dict(ds.skipped)
    assert set(reasons) == {notes, hidden, loose, broken}
    assert "not an image" in reasons[notes] and "not an image" in reasons[hidden]
    assert "group sub-folder" in reasons[loose]
    every_file = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert every_file == set(ds.db_paths) | set(reasons)
    assert ds.n_queries == 5


def test_a_folder_of_singletons_loads_but_evaluation_says_there_are_no_queries(tmp_path):
    for group in ("cat", "dog", "owl"):
        _write(tmp_path / group / "only.png")
    ds = folder.load(tmp_path)
    assert ds.n_db == 3 and ds.n_queries == 0
    with pytest.raises(ValueError, match="no queries") as err:
        evaluate.evaluate(np.zeros((0, 3), np.int64), ds)
    message = str(err.value)
    assert str(tmp_path) in message and "at least two images" in message
