"""Oxford5k (real gt_files_170407.tgz, tiny images) and Paris6k (fake gt, a corrupt image) loaders."""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from retrievalkit.datasets import DatasetNotFoundError, load
from retrievalkit.datasets.oxford import load_oxford5k, load_paris6k

from conftest import MIRROR, jpeg_bytes, truncated_jpeg_bytes

GT_ARCHIVE = MIRROR / "gt_files_170407.tgz"
DISTRACTORS = ("oxford_900000", "oxford_900001")


def read_names(path: Path) -> list[str]:
    return path.read_text().split()


def query_name(gt: Path, stem: str) -> str:
    return (gt / f"{stem}_query.txt").read_text().split()[0].removeprefix("oxc1_")


@pytest.fixture(scope="module")
def oxford_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oxford5k")
    with tarfile.open(GT_ARCHIVE) as tar:
        tar.extractall(root / "gt", filter="data")
    gt = root / "gt"
    names = {query_name(gt, f.name[: -len("_query.txt")]) for f in gt.glob("*_query.txt")}
    for kind in ("good", "ok", "junk"):
        for f in gt.glob(f"*_{kind}.txt"):
            names.update(read_names(f))
    (root / "jpg").mkdir()
    tiny = jpeg_bytes()
    for name in sorted(names) + list(DISTRACTORS):
        (root / "jpg" / f"{name}.jpg").write_bytes(tiny)
    return root


def test_oxford_has_55_queries_and_the_whole_folder_as_database(oxford_root):
    ds = load("oxford5k", root=oxford_root)
    n_images = len(list((oxford_root / "jpg").glob("*.jpg")))
    assert ds.n_queries == 55
    assert ds.n_db == n_images
    assert ds.skipped == []
    assert {"oxford_900000", "oxford_900001"} <= {p.stem for p in ds.db_paths}


def test_oxford_first_query_positives_are_good_and_ok(oxford_root):
    ds = load_oxford5k(root=oxford_root)
    gt = oxford_root / "gt"
    assert ds.query_paths[0].name == "all_souls_000013.jpg"  # the "oxc1_" prefix is gone
    assert ds.gnd[0].bbox == (136.5, 34.1, 648.5, 955.7)
    names = [p.stem for p in ds.db_paths]
    positives = {names[i] for i in ds.gnd[0].positives}
    junk = {names[i] for i in ds.gnd[0].junk}
    assert positives == set(read_names(gt / "all_souls_1_good.txt")) | set(read_names(gt / "all_souls_1_ok.txt"))
    assert junk == set(read_names(gt / "all_souls_1_junk.txt"))
    assert len(positives) == 24 + 54


def test_oxford_queries_are_database_images_counted_as_positives(oxford_root):
    ds = load_oxford5k(root=oxford_root)
    for q, row in enumerate(ds.query_db_index):
        assert ds.db_paths[row] == ds.query_paths[q]
        assert row in ds.gnd[q].positives  # the official good/ok lists hold every query image
        assert row not in ds.gnd[q].junk


def test_oxford_missing_image_is_reported(oxford_root, tmp_path):
    root = tmp_path / "oxford5k"
    (root / "jpg").mkdir(parents=True)
    (root / "gt").symlink_to(oxford_root / "gt")
    gone = "all_souls_000091"  # in all_souls_1_good.txt
    for p in (oxford_root / "jpg").glob("*.jpg"):
        if p.stem != gone:
            (root / "jpg" / p.name).symlink_to(p)
    ds = load_oxford5k(root=root)
    assert [(p.name, "not found" in why) for p, why in ds.skipped] == [(f"{gone}.jpg", True)]
    assert gone not in {ds.db_paths[i].stem for i in ds.gnd[0].positives}
    assert len(ds.gnd[0].positives) == 24 + 54 - 1


def test_oxford_missing_folders(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="retrievalkit datasets fetch oxford5k"):
        load_oxford5k(root=tmp_path)
    (tmp_path / "jpg").mkdir()
    (tmp_path / "jpg" / "a.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "gt"))):
        load_oxford5k(root=tmp_path)


PARIS_GT = {
    "defense_1": ("paris_defense_000605 10 20 30 40.5",
                  ["paris_defense_000001", "paris_defense_000605"], ["paris_defense_000003"], ["paris_defense_000004"]),
    "eiffel_1": ("paris_eiffel_000010 1 2 3 4",
                 ["paris_eiffel_000010", "paris_eiffel_000011"], [], ["paris_defense_000001"]),
}
PARIS_GOOD_IMAGES = ("paris_defense_000003", "paris_defense_000004", "paris_defense_000605",
                     "paris_eiffel_000010", "paris_eiffel_000011", "paris_general_000000")
PARIS_CORRUPT = ("paris_defense_000001", "paris_eiffel_000012")


@pytest.fixture
def paris_root(tmp_path) -> Path:
    root = tmp_path / "paris6k"
    (root / "gt").mkdir(parents=True)
    for stem, (query, good, ok, junk) in PARIS_GT.items():
        (root / "gt" / f"{stem}_query.txt").write_text(query + "\n")
        for kind, names in (("good", good), ("ok", ok), ("junk", junk)):
            (root / "gt" / f"{stem}_{kind}.txt").write_text("".join(n + "\n" for n in names))
    (root / "jpg").mkdir()
    for i, name in enumerate(PARIS_GOOD_IMAGES):
        (root / "jpg" / f"{name}.jpg").write_bytes(jpeg_bytes(seed=i))
    (root / "jpg" / f"{PARIS_CORRUPT[0]}.jpg").write_bytes(truncated_jpeg_bytes(seed=1))
    (root / "jpg" / f"{PARIS_CORRUPT[1]}.jpg").write_bytes(b"")
    return root


def test_paris_skips_corrupt_images_and_reindexes(paris_root):
    ds = load_paris6k(root=paris_root)
    assert sorted(p.stem for p, _ in ds.skipped) == sorted(PARIS_CORRUPT)
    assert any("truncated" in why for _, why in ds.skipped)
    names = [p.stem for p in ds.db_paths]
    assert names == sorted(PARIS_GOOD_IMAGES)
    assert ds.n_queries == 2
    by_name = lambda rows: {names[i] for i in rows}  # noqa: E731
    assert by_name(ds.gnd[0].positives) == {"paris_defense_000605", "paris_defense_000003"}
    assert by_name(ds.gnd[0].junk) == {"paris_defense_000004"}
    assert ds.gnd[0].bbox == (10.0, 20.0, 30.0, 40.5)
    assert by_name(ds.gnd[1].positives) == {"paris_eiffel_000010", "paris_eiffel_000011"}
    assert len(ds.gnd[1].junk) == 0
    assert [names[r] for r in ds.query_db_index] == ["paris_defense_000605", "paris_eiffel_000010"]


def test_paris_without_the_check_keeps_the_corrupt_file(paris_root):
    # Why the check is on by default: without it the corrupt files reach feature extraction.
    ds = load_paris6k(root=paris_root, check_images=False)
    assert "paris_defense_000001" in {p.stem for p in ds.db_paths}


def test_oxford_boxes_apply_to_the_stored_pixels(oxford_root):
    ds = load_oxford5k(root=oxford_root)
    assert not ds.exif_transpose  # the gt boxes were drawn on the stored frame, as revisitop's
    assert not ds.revisited  # the original protocol: standard mP@k
