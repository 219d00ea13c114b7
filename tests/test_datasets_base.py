"""datasets.base: the grouped-queries constructor every grouped loader uses, and resolve_root."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrievalkit.datasets import base, download
from retrievalkit.datasets.base import RetrievalDataset, resolve_root


@pytest.mark.parametrize("query_is_positive", [False, True])
def test_grouped_matches_a_loop_over_the_labels(query_is_positive):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=60)
    paths = [Path(f"/x/{i}.jpg") for i in range(60)]
    query_rows = np.flatnonzero(rng.random(60) < 0.5)
    ds = RetrievalDataset.grouped("toy", "/x", paths, labels, query_rows, query_is_positive=query_is_positive)
    assert ds.protocols == ("all",) and ds.split == "test"
    assert ds.query_paths == [paths[q] for q in query_rows]
    np.testing.assert_array_equal(ds.query_labels, labels[query_rows])
    for q, g in zip(query_rows, ds.gnd):
        same = [r for r in range(60) if labels[r] == labels[q]]
        if query_is_positive:
            assert g.positives.tolist() == same and g.junk.tolist() == []
        else:
            assert g.positives.tolist() == [r for r in same if r != q] and g.junk.tolist() == [q]


def test_grouped_with_string_labels_passes_other_fields_through():
    ds = RetrievalDataset.grouped("toy", "/x", ["a", "b", "c"], np.array(["u", "v", "u"]), [0, 2],
                                  split="custom", meta={"k": 1})
    assert [g.positives.tolist() for g in ds.gnd] == [[2], [0]]
    assert ds.split == "custom" and ds.meta == {"k": 1}


def test_resolve_root_uses_the_given_folder_without_fetching(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "ensure", lambda *a, **k: pytest.fail("must not fetch"))
    assert resolve_root("holidays", str(tmp_path)) == tmp_path


def test_resolve_root_fetches_when_no_folder_is_given(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(download, "ensure", lambda name, home, **kw: calls.append((name, home, kw)) or str(tmp_path))
    assert base.resolve_root("rparis6k", None, "home", download=False, parts=("gnd",)) == tmp_path
    assert calls == [("rparis6k", "home", {"download": False, "progress": None, "parts": ("gnd",)})]


def test_query_rows_in_db_only_when_every_query_is_an_uncropped_database_image():
    ds = RetrievalDataset.grouped("toy", "/x", ["a", "b", "c"], np.array([1, 2, 1]), [0, 2])
    np.testing.assert_array_equal(ds.query_rows_in_db, [0, 2])
    from dataclasses import replace

    ds.gnd[1] = replace(ds.gnd[1], bbox=(0, 0, 4, 4))  # one cropped query: every query gets its own description
    assert ds.query_rows_in_db is None
