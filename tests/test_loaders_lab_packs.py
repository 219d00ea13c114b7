"""Loaders of the real instance-retrieval lab packs: SMVS DVD covers, Paris6k-mini, SOP kettles/fans.

Survey §2.5.1; taught in notebooks/00_setup_and_data. Each pack (19–27 MB tar in ../shared/mirror)
comes through the real data hub once per session: mirror → sha256 → safe extraction.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import _fetch_from_mirror
from retrievalkit import evaluate
from retrievalkit.datasets import DatasetNotFoundError, download, manifest, revisited, smvs, sop
from retrievalkit.datasets.download import ChecksumError

PARIS_QUERY_IDS = [3, 4, 7, 11, 14, 15, 16, 17, 18, 21, 24, 54]  # the qimlist entries in the pack (shared README)


def _pack_home(tmp_path_factory, shared_mirror, name):
    spec = manifest.get(name).files[-1]
    if not (shared_mirror / spec.filename).is_file():
        pytest.fail(f"the test mirror lacks the lab pack {shared_mirror / spec.filename} (see ../shared/README.md)")
    return _fetch_from_mirror(name, tmp_path_factory.mktemp(name), shared_mirror)


@pytest.fixture(scope="session")
def smvs_root(tmp_path_factory, shared_mirror) -> Path:
    return _pack_home(tmp_path_factory, shared_mirror, "smvs_dvd")


@pytest.fixture(scope="session")
def paris_mini_root(tmp_path_factory, shared_mirror) -> Path:
    return _pack_home(tmp_path_factory, shared_mirror, "rparis6k_mini")


@pytest.fixture(scope="session")
def sop_root(tmp_path_factory, shared_mirror) -> Path:
    return _pack_home(tmp_path_factory, shared_mirror, "sop_kettles_fans")


def _perfect_ranking(dataset) -> np.ndarray:
    """Every query's positives first, then the rest of the database (junk included)."""
    rows = []
    for positives, _ in dataset.ground_truth():
        rest = np.setdiff1d(np.arange(dataset.n_db), positives)
        rows.append(np.concatenate([positives, rest]))
    return np.stack(rows)


def _truncate(path: Path) -> None:
    """Replace a file by a copy that stops in the middle of its JPEG data (a corrupt image)."""
    data = path.read_bytes()
    path.unlink()  # the extracted pack may be hard-linked elsewhere: write a new file
    path.write_bytes(data[: len(data) // 3])


# --------------------------------------------------------------------------- SMVS DVD covers


def test_smvs_counts_one_positive_per_query_and_cameras(smvs_root):
    ds = smvs.load(smvs_root)
    assert (ds.n_db, ds.n_queries, ds.skipped, ds.meta["missing"]) == (100, 400, [], 0)
    assert all(p.parent.name == "Reference" for p in ds.db_paths)
    for q, (positives, junk) in enumerate(ds.ground_truth()):
        assert len(positives) == 1 and len(junk) == 0
        assert ds.db_paths[positives[0]].name == ds.query_paths[q].name  # same cover number
        assert ds.query_paths[q].parent.name == ds.meta["camera"][q]
    parts = smvs.by_camera(ds)
    assert list(parts) == list(smvs.CAMERAS) and all(part.n_queries == 100 for part in parts.values())
    assert not {str(p.parent.name) for p in ds.query_paths} & {"Reference"}  # no query in the database


def test_smvs_per_camera_scores_use_the_right_rows(smvs_root):
    ds = smvs.load(smvs_root, check_images=False)
    ids = _perfect_ranking(ds)
    ids[ds.meta["camera"] == "Palm"] = np.roll(ids[ds.meta["camera"] == "Palm"], 1, axis=1)  # positive at rank 2
    rows = {cam: evaluate.evaluate(ids[part.meta["query_rows"]], part)[0] for cam, part in smvs.by_camera(ds).items()}
    assert {cam: (r["mAP_finite"], r["mP@1"]) for cam, r in rows.items()} == {
        "Canon": (1.0, 1.0), "Droid": (1.0, 1.0), "E63": (1.0, 1.0), "Palm": (0.5, 0.0)}  # one positive at rank 2


def test_smvs_missing_and_corrupt_files_are_skipped_and_listed(smvs_root, tmp_path, caplog):
    root = tmp_path / "smvs"
    shutil.copytree(smvs_root / smvs.IMAGE_FOLDER, root / smvs.IMAGE_FOLDER)
    folder = root / smvs.IMAGE_FOLDER
    (folder / "Reference" / "005.jpg").unlink()
    (folder / "Canon" / "010.jpg").unlink()
    _truncate(folder / "Droid" / "020.jpg")

    ds = smvs.load(root)
    assert ds.n_db == 99 and ds.meta["missing"] == 2
    # cover 5's four photos lose their positive; Canon/010 is gone; Droid/020 is unreadable
    assert ds.n_queries == 400 - 4 - 1 - 1
    reasons = {f"{p.parent.name}/{p.name}": r for p, r in ds.skipped}
    assert reasons["Reference/005.jpg"] == reasons["Canon/010.jpg"] == "file not found"
    assert "reference Reference/005.jpg" in reasons["Palm/005.jpg"]
    assert "Droid/020.jpg" in reasons and reasons["Droid/020.jpg"] != "file not found"
    assert "skipped" in caplog.text
    assert all(ds.db_paths[p[0]].name == ds.query_paths[q].name for q, (p, _) in enumerate(ds.ground_truth()))


# --------------------------------------------------------------------------- RParis6k over the mini pack


def test_paris_mini_is_the_revisited_protocol_restricted_to_the_images_present(paris_mini_root, capsys):
    ds = revisited.load_rparis6k_mini(paris_mini_root)
    assert "238 of 6,322 database images and 12 of 70 queries present" in capsys.readouterr().out
    assert (ds.n_db, ds.n_queries, ds.skipped, ds.meta["missing"]) == (238, 12, [], {"database": 0, "queries": 0})
    assert ds.revisited and not ds.exif_transpose  # revisitop's mP@k; boxes in the stored pixel frame
    assert ds.protocols == ("easy", "medium", "hard")

    # the same restriction computed directly from the pickle, by image name
    cfg = download.load_gnd_pickle(paris_mini_root / "gnd_rparis6k.pkl")
    present = {p.stem for p in paris_mini_root.glob("paris/*/*.jpg")}
    assert [p.stem for p in ds.db_paths] == [n for n in cfg["imlist"] if n in present]
    assert [p.stem for p in ds.query_paths] == [cfg["qimlist"][i] for i in PARIS_QUERY_IDS]
    db_names = np.array([p.stem for p in ds.db_paths])
    for g, i in zip(ds.gnd, PARIS_QUERY_IDS):
        expected = cfg["gnd"][i]
        for key, rows in (("easy", g.easy), ("hard", g.hard), ("junk", g.junk)):
            names = [cfg["imlist"][j] for j in expected[key] if cfg["imlist"][j] in present]
            assert sorted(db_names[rows]) == sorted(names), (i, key)
        assert g.bbox == pytest.approx(tuple(expected["bbx"]))
    assert not {p.stem for p in ds.query_paths} & set(db_names)  # no query among its own positives
    assert all(len(g.easy) + len(g.hard) > 0 for g in ds.gnd)

    ids = _perfect_ranking(ds)
    rows = {r["protocol"]: r for r in evaluate.evaluate(ids, ds)}
    assert rows["medium"]["mAP"] == pytest.approx(1.0) and rows["hard"]["mP@1"] == pytest.approx(1.0)


def test_paris_mini_with_missing_and_corrupt_images(paris_mini_root, tmp_path, capsys):
    root = tmp_path / "mini"
    shutil.copytree(paris_mini_root, root)
    full = revisited.load_rparis6k_mini(paris_mini_root)
    capsys.readouterr()
    gone, broken = full.db_paths[0], full.query_paths[0]
    (root / gone.relative_to(paris_mini_root)).unlink()
    _truncate(root / broken.relative_to(paris_mini_root))

    ds = revisited.load_rparis6k_mini(root)
    out = capsys.readouterr().out
    assert (ds.n_db, ds.n_queries) == (237, 11)
    assert [p.name for p, _ in ds.skipped] == [broken.name]  # the absent image is counted, not listed
    assert ds.meta["missing"] == {"database": 1, "queries": 1}
    assert "1 of the pack's 238 database images and 1 of its 12 queries are missing" in out
    assert "retrievalkit datasets fetch rparis6k_mini" in out


def test_partial_opt_in_for_a_full_revisited_dataset(paris_mini_root, tmp_path, capsys):
    """A user holding part of RParis6k under the official jpg/ layout takes the same code path."""
    root = tmp_path / "rparis6k"
    (root / "jpg").mkdir(parents=True)
    shutil.copyfile(paris_mini_root / "gnd_rparis6k.pkl", root / "gnd_rparis6k.pkl")
    for path in sorted(paris_mini_root.glob("paris/*/*.jpg"))[:40]:
        shutil.copyfile(path, root / "jpg" / path.name)
    with pytest.raises(DatasetNotFoundError, match="partial=True|check_images=True"):
        revisited.load_rparis6k(root)
    ds = revisited.load_rparis6k(root, partial=True)
    present = {p.name for p in (root / "jpg").iterdir()}
    assert ds.n_db + ds.n_queries == 40 and {p.name for p in ds.db_paths + ds.query_paths} == present
    assert f"{ds.n_db} of 6,322 database images and {ds.n_queries} of 70 queries present" in capsys.readouterr().out
    assert ds.name == "rparis6k" and ds.revisited and ds.skipped == []


# --------------------------------------------------------------------------- SOP kettles and fans


def test_sop_splits_are_disjoint_by_product(sop_root):
    learn, test = sop.load(sop_root, split="learn"), sop.load(sop_root, split="test")
    learn_products, test_products = set(learn.db_labels.tolist()), set(test.db_labels.tolist())
    assert not learn_products & test_products
    assert len(learn_products) == len(test_products) == 262
    assert max(learn_products) < min(test_products)  # first half of the sorted ids learns
    all_ids = sorted(learn_products | test_products)
    assert sop.FIRST_TEST_PRODUCT == all_ids[len(all_ids) // 2]  # the fixed boundary is the pack's halfway id
    assert learn.n_db + test.n_db == 1_600 and not set(learn.db_paths) & set(test.db_paths)
    assert test.n_db == manifest.get("sop_kettles_fans").n_queries + 52  # 52 test products have one photo


def test_sop_queries_have_siblings_and_are_excluded_from_their_ranking(sop_root):
    ds = sop.load(sop_root)
    assert (ds.n_db, ds.n_queries, ds.skipped, ds.meta["missing"]) == (761, 709, [], 0)
    counts = {lab: int((ds.db_labels == lab).sum()) for lab in np.unique(ds.db_labels)}
    assert ds.n_queries == sum(c for c in counts.values() if c > 1)
    for q, row in enumerate(ds.query_db_index):
        positives, junk = ds.gnd[q].positives, ds.gnd[q].junk
        assert row not in positives and list(junk) == [row]
        assert sorted(positives) == sorted(set(np.flatnonzero(ds.db_labels == ds.db_labels[row])) - {row})


def test_sop_exact_duplicates_are_reported(sop_root):
    everything = sop.load(sop_root, split="all")
    groups = everything.meta["duplicates"]
    assert (len(groups), sum(len(g) - 1 for g in groups)) == (32, 47)
    assert all(len({sop.parse_name(p.name)[0] for p in g}) == 1 for g in groups)  # all inside one product
    assert all(len({p.read_bytes() for p in g}) == 1 for g in groups)
    test = sop.load(sop_root)
    dropped = sop.load(sop_root, drop_duplicates=True)
    redundant = sum(len(g) - 1 for g in test.meta["duplicates"])
    assert dropped.n_db == test.n_db - redundant and len(dropped.skipped) == redundant


def test_sop_missing_and_corrupt_files(sop_root, tmp_path):
    root = tmp_path / "sop"
    shutil.copytree(sop_root / sop.IMAGE_FOLDER, root / sop.IMAGE_FOLDER)
    test = sop.load(sop_root)
    (root / sop.IMAGE_FOLDER / test.db_paths[0].name).unlink()
    _truncate(root / sop.IMAGE_FOLDER / test.db_paths[5].name)
    ds = sop.load(root)
    assert ds.meta["missing"] == 1 and ds.n_db == 761 - 2
    assert [p.name for p, _ in ds.skipped] == [test.db_paths[5].name]
    assert set(ds.db_labels.tolist()) <= set(test.db_labels.tolist())  # the split did not move


# --------------------------------------------------------------------------- fetching a pack


def test_corrupt_pack_in_a_mirror_folder_is_refused(tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "smvs-dvd-covers-640.tar").write_bytes(b"not the pack")
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(lab))
    with pytest.raises(ChecksumError, match=r"smvs-dvd-covers-640\.tar.*checksum mismatch.*Replace the mirror's copy"):
        download.ensure("smvs_dvd", tmp_path / "home", download=False)
    assert not (tmp_path / "home" / "smvs_dvd" / smvs.IMAGE_FOLDER).exists()


def test_corrupt_pack_from_a_web_mirror_is_moved_aside(tmp_path, monkeypatch):
    served = tmp_path / "www"
    served.mkdir()
    (served / "sop-kettles-fans.tar").write_bytes(b"truncated download")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    try:
        with pytest.raises(ChecksumError, match=r"sop-kettles-fans\.tar: checksum mismatch.*moved aside"):
            download.ensure("sop_kettles_fans", tmp_path / "home", download=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (tmp_path / "home" / "downloads" / "sop-kettles-fans.tar.bad").is_file()
    assert not (tmp_path / "home" / "downloads" / "sop-kettles-fans.tar").exists()


def test_pack_without_a_mirror_says_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"smvs-dvd-covers-640\.tar.*course mirror.*kdatsenko") as info:
        download.ensure("smvs_dvd", tmp_path, download=True)  # no URL serves a pack: nothing is downloaded
    assert "could not fetch" not in str(info.value)
    with pytest.raises(DatasetNotFoundError, match=r"paris6k-mini\.tar.*GrigorySamokhin"):
        download.ensure("rparis6k_mini", tmp_path, download=False, parts=("images",))
