"""The data hub: mirror, resumable HTTP with checksums, safe extraction, restricted unpickling.

No internet: HTTP goes to a server on 127.0.0.1 started here; the mirror is ../shared/mirror.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import random
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from retrievalkit.datasets import DatasetNotFoundError, LOADERS, download, manifest
from retrievalkit.datasets.download import ChecksumError, DownloadError, UnsafeArchiveError

from conftest import MIRROR

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _need_mirror(*names):
    missing = [n for n in names if not (MIRROR / n).is_file()]
    if missing:
        pytest.fail(f"shared mirror lacks {missing} (expected under {MIRROR}: put ../shared beside the checkout)")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    # No proxy may capture 127.0.0.1, no user mirror or data home may leak into a test.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path / "unused_default_home"))
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)




# --------------------------------------------------------------------------- HTTP downloads
def test_download_full_file_with_checksum(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    dest = download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no .partial left behind


def test_dropped_connection_leaves_partial_and_next_call_resumes(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.cut_once["/f.bin"] = 100_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="f.bin"):
        download.download_file(server.url + "/f.bin", dest, sha256=PAYLOAD_SHA, retries=0)
    partial = tmp_path / "f.bin.partial"
    assert not dest.exists()
    assert partial.stat().st_size == 100_000

    download.download_file(server.url + "/f.bin", dest, sha256=PAYLOAD_SHA, retries=0)
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")
    assert dest.read_bytes() == PAYLOAD
    assert not partial.exists()


def test_dropped_connection_is_resumed_within_one_call(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.cut_once["/f.bin"] = 12_345
    dest = download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA)
    assert [r for _, r in server.requests] == [None, "bytes=12345-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_moves_file_aside(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    wrong = "0" * 64
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError) as err:
        download.download_file(server.url + "/f.bin", dest, sha256=wrong)
    message = str(err.value)
    assert "f.bin" in message and wrong in message and PAYLOAD_SHA in message and "fetch again" in message
    assert not dest.exists() and not (tmp_path / "f.bin.partial").exists()
    assert (tmp_path / "f.bin.bad").read_bytes() == PAYLOAD


def _partial_from(url: str, path: Path, content: bytes) -> None:
    """A partial download as an interrupted fetch of ``url`` leaves it (its source noted beside it)."""
    path.write_bytes(content)
    path.with_name(path.name + ".source").write_text(url)


def test_server_ignoring_range_still_gives_the_right_file(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.honour_range = False
    _partial_from(server.url + "/f.bin", tmp_path / "f.bin.partial", PAYLOAD[:5_000])
    dest = download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA)
    assert server.requests == [("/f.bin", "bytes=5000-")]  # it asked, got a 200, started again
    assert dest.read_bytes() == PAYLOAD


def test_complete_partial_is_finished_after_416(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    _partial_from(server.url + "/f.bin", tmp_path / "f.bin.partial", PAYLOAD)
    dest = download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD and server.requests == [("/f.bin", f"bytes={len(PAYLOAD)}-")]


def test_next_url_is_tried_after_a_404(server, tmp_path):
    server.routes["/second/f.bin"] = PAYLOAD
    urls = [server.url + "/dead/f.bin", server.url + "/second/f.bin"]
    dest = download.download_file(urls, tmp_path / "f.bin", sha256=[PAYLOAD_SHA, "1" * 64])
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="404"):
        download.download_file([server.url + "/dead/f.bin"], tmp_path / "g.bin")


# --------------------------------------------------------------------------- safe extraction
def _tar(path: Path, members) -> Path:
    """members: (name, bytes) for files, (name, ('sym'|'hard', target)) for links."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "sym" else tarfile.LNKTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize("bad_member", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil_abs.txt"])
def test_safe_extract_refuses_paths_leaving_the_folder(tmp_path, bad_member):
    archive = _tar(tmp_path / "a.tgz", [("fine.txt", b"x"), (bad_member, b"evil")])
    dest = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError, match=re.escape(bad_member)):
        download.safe_extract(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # the staging folder is gone too


@pytest.mark.parametrize("target", ["../../outside", "/etc/passwd", "a/../../../x"])
def test_safe_extract_refuses_links_pointing_outside(tmp_path, target):
    archive = _tar(tmp_path / "a.tgz", [("sub/link", ("sym", target))])
    with pytest.raises(UnsafeArchiveError, match="sub/link"):
        download.safe_extract(archive, tmp_path / "dest")
    hard = _tar(tmp_path / "h.tgz", [("hard", ("hard", "../secret"))])
    with pytest.raises(UnsafeArchiveError, match="hard"):
        download.safe_extract(hard, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_safe_extract_refuses_escape_through_an_earlier_link(tmp_path):
    # "deep/x" -> ".." is inside; "deep/x/y" -> "../.." then looks inside lexically but is not.
    archive = _tar(tmp_path / "a.tgz", [("deep/x", ("sym", "..")), ("deep/x/y", ("sym", "../.."))])
    with pytest.raises(UnsafeArchiveError, match="deep/x/y"):
        download.safe_extract(archive, tmp_path / "dest")


def test_safe_extract_zip_refuses_traversal(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", "ok")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(UnsafeArchiveError, match=re.escape("../evil.txt")):
        download.safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest").exists()


def test_safe_extract_flattens_filters_and_merges(tmp_path):
    first = _tar(tmp_path / "paris_1.tgz", [
        ("paris/defense/paris_defense_000001.jpg", b"a"),
        ("paris/louvre/paris_louvre_000002.jpg", b"b"),
        ("paris/README", b"not an image"),
    ])
    second = _tar(tmp_path / "paris_2.tgz", [("paris/triomphe/paris_triomphe_000003.jpg", b"c")])
    keep_jpg = lambda name: name.endswith(".jpg")  # noqa: E731
    dest = tmp_path / "paris6k" / "jpg"
    written = download.safe_extract(first, dest, flatten=True, members_filter=keep_jpg)
    download.safe_extract(second, dest, flatten=True, members_filter=keep_jpg)
    assert sorted(p.name for p in dest.iterdir()) == [
        "paris_defense_000001.jpg", "paris_louvre_000002.jpg", "paris_triomphe_000003.jpg"]
    assert (dest / "paris_louvre_000002.jpg").read_bytes() == b"b"
    assert sorted(written) == [dest / "paris_defense_000001.jpg", dest / "paris_louvre_000002.jpg"]
    assert [p.name for p in (tmp_path / "paris6k").iterdir()] == ["jpg"]  # no staging folder left


def test_interrupted_extraction_leaves_nothing_under_dest(tmp_path):
    archive = _tar(tmp_path / "a.tgz", [(f"f{i}.txt", b"x") for i in range(10)])

    def stop_at_f5(name):
        if name == "f5.txt":
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        download.safe_extract(archive, tmp_path / "dest", members_filter=stop_at_f5)
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz"]


# --------------------------------------------------------------------------- ground-truth pickles
@pytest.mark.parametrize("name, n_db, n_q", [("roxford5k", 4_993, 70), ("rparis6k", 6_322, 70)])
def test_load_gnd_pickle_reads_the_official_files(name, n_db, n_q):
    _need_mirror(f"gnd_{name}.pkl")
    cfg = download.load_gnd_pickle(MIRROR / f"gnd_{name}.pkl")
    assert len(cfg["imlist"]) == n_db and len(cfg["qimlist"]) == n_q and len(cfg["gnd"]) == n_q
    assert set(cfg["gnd"][0]) == {"bbx", "easy", "hard", "junk"}
    assert len(cfg["gnd"][0]["bbx"]) == 4 and all(isinstance(i, int) for i in cfg["gnd"][0]["easy"])


class NotAGroundTruth:
    pass


@pytest.mark.parametrize("payload, refused", [
    ({"gnd": [os.system]}, "system"),
    ({"imlist": NotAGroundTruth()}, "NotAGroundTruth"),
])
def test_load_gnd_pickle_refuses_globals(tmp_path, payload, refused):
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(pickle.UnpicklingError, match=refused) as err:
        download.load_gnd_pickle(path)
    assert "gnd_evil.pkl" in str(err.value)


# --------------------------------------------------------------------------- ensure: sources and errors
def test_coil100_from_mirror_folder_then_present(monkeypatch, tmp_path):
    _need_mirror("coil-100.zip")
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(MIRROR))
    root = download.ensure("coil100", tmp_path, download=False)
    assert root == tmp_path / "coil100"
    pngs = {p.name for p in (root / "coil-100").iterdir()}
    assert pngs == {f"obj{o}__{a}.png" for o in range(1, 101) for a in range(0, 360, 5)}
    assert not (tmp_path / "downloads" / "coil-100.zip").exists()  # read in place, not copied

    first_png = root / "coil-100" / "obj1__0.png"
    mtime = first_png.stat().st_mtime_ns

    def forbidden(*args, **kwargs):
        raise AssertionError("a present dataset must not be copied, extracted or hashed again")

    for func in ("safe_extract", "download_file", "file_digests"):
        monkeypatch.setattr(download, func, forbidden)
    assert download.ensure("coil100", tmp_path, download=False) == root
    assert first_png.stat().st_mtime_ns == mtime
    report = download.verify("coil100", tmp_path)
    assert report["ok"] and report["counts"]["images"]["found"] == 7_200


def test_missing_dataset_without_mirror_names_path_and_command(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        download.ensure("ukbench", tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "ukbench") in message
    assert "retrievalkit datasets fetch ukbench" in message and "RETRIEVALKIT_MIRROR" in message


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match="coil100.*roxford5k"):
        download.ensure("imagenet21k", tmp_path)
    with pytest.raises(ValueError, match="gnd, images"):
        download.ensure("roxford5k", tmp_path, parts=("labels",))


def test_mirror_as_http_url(server, monkeypatch, tmp_path):
    _need_mirror("gnd_roxford5k.pkl", "gt_files_170407.tgz")
    for name in ("gnd_roxford5k.pkl", "gt_files_170407.tgz"):
        server.routes[f"/lab/{name}"] = (MIRROR / name).read_bytes()
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", server.url + "/lab/")

    root = download.ensure("roxford5k", tmp_path, parts=("gnd",), download=False)
    assert _sha256(root / "gnd_roxford5k.pkl") == manifest.get("roxford5k").files[0].sha256[0]

    oxford = download.ensure("oxford5k", tmp_path, parts="gnd", download=False)
    assert len(list((oxford / "gt").glob("*_query.txt"))) == 55
    assert len(list((oxford / "gt").glob("*.txt"))) == 220
    assert (tmp_path / "downloads" / "gt_files_170407.tgz").is_file()  # kept for verify()

    with pytest.raises(DatasetNotFoundError, match="oxbuild_images-v1.tgz"):  # the lab mirror has no images
        download.ensure("roxford5k", tmp_path, download=False)
    assert ("/lab/oxbuild_images-v1.tgz", None) in server.requests


def test_official_urls_are_used_when_download_is_true(server, monkeypatch, tmp_path):
    _need_mirror("gnd_rparis6k.pkl")
    server.routes["/official/gnd_rparis6k.pkl"] = (MIRROR / "gnd_rparis6k.pkl").read_bytes()
    entry = manifest.get("rparis6k")
    urls = (server.url + "/gone.pkl", server.url + "/official/gnd_rparis6k.pkl")
    gnd = dataclasses.replace(entry.files[0], urls=urls)
    monkeypatch.setitem(manifest.MANIFEST, "rparis6k", dataclasses.replace(entry, files=(gnd, *entry.files[1:])))

    with pytest.raises(DatasetNotFoundError):
        download.ensure("rparis6k", tmp_path, parts=("gnd",), download=False)
    assert server.requests == []
    root = download.ensure("rparis6k", tmp_path, parts=("gnd",), download=True)
    assert len(download.load_gnd_pickle(root / "gnd_rparis6k.pkl")["imlist"]) == 6_322


def test_corrupt_mirror_copy_is_refused(monkeypatch, tmp_path):
    _need_mirror("gnd_roxford5k.pkl")
    lab = tmp_path / "lab_mirror"
    lab.mkdir()
    (lab / "gnd_roxford5k.pkl").write_bytes((MIRROR / "gnd_roxford5k.pkl").read_bytes()[:-10])
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(lab))
    with pytest.raises(ChecksumError, match="gnd_roxford5k.pkl"):
        download.ensure("roxford5k", tmp_path / "home", parts=("gnd",), download=False)
    root = tmp_path / "home" / "roxford5k"
    assert not (root / "gnd_roxford5k.pkl").exists() and (root / "gnd_roxford5k.pkl.bad").exists()


def test_holidays_list_from_bare_file_or_from_eval_package(monkeypatch, tmp_path):
    _need_mirror("holidays_images.dat")
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(MIRROR))
    bare = download.ensure("holidays", tmp_path / "a", parts=("gnd",), download=False)
    assert _sha256(bare / "holidays_images.dat") == _sha256(MIRROR / "holidays_images.dat")

    lab = tmp_path / "lab_mirror"
    lab.mkdir()
    _tar(lab / "eval_holidays.tgz", [
        ("eval_holidays/holidays_images.dat", (MIRROR / "holidays_images.dat").read_bytes()),
        ("eval_holidays/holidays_map.py", b"print('not extracted')"),
    ])
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(lab))
    root = download.ensure("holidays", tmp_path / "b", parts=("gnd",), download=False)
    assert sorted(p.name for p in root.iterdir()) == [".complete-eval_holidays.tgz", "holidays_images.dat"]
    assert len((root / "holidays_images.dat").read_text().split()) == 1_491


def test_hand_placed_folder_is_accepted_unless_an_extraction_was_interrupted(tmp_path):
    root = tmp_path / "holidays"
    (root / "jpg").mkdir(parents=True)
    for i in range(1_491):
        (root / "jpg" / f"{100000 + i}.jpg").touch()
    (root / "holidays_images.dat").write_text("")
    assert download.ensure("holidays", tmp_path, download=False) == root

    (root / ".extracting-jpg2.tar.gz").touch()
    assert not download.is_present("holidays", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="jpg1.tar.gz"):
        download.ensure("holidays", tmp_path, download=False)


def test_fashion_mnist_resolves_to_an_os_package_folder(tmp_path, monkeypatch):
    # A fake Debian folder (dataset-fashion-mnist installs the same re-gzipped files there).
    system = tmp_path / "usr-share-datasets" / "fashion-mnist"
    system.mkdir(parents=True)
    names = [f.filename for f in manifest.get("fashion_mnist").files]
    for name in names:
        shutil.copyfile(MIRROR / name, system / name)
    entry = manifest.MANIFEST["fashion_mnist"]
    monkeypatch.setitem(manifest.MANIFEST, "fashion_mnist", dataclasses.replace(entry, system_dirs=(str(system),)))
    monkeypatch.delenv("RETRIEVALKIT_MIRROR", raising=False)
    home = tmp_path / "home"
    assert download.ensure("fashion_mnist", home, download=False) == system
    assert download.locate("fashion_mnist", home) == system
    assert not (home / "fashion_mnist").exists()  # nothing copied: the OS folder is used as it is
    statuses = {f["status"] for f in download.verify("fashion_mnist", home)["files"]}
    assert statuses == {"known copy"}


# --------------------------------------------------------------------------- the manifest itself
def test_manifest_covers_every_loader_and_matches_the_shared_mirror():
    assert set(manifest.MANIFEST) == set(LOADERS) - {"folder"}
    for entry in manifest.MANIFEST.values():
        for spec in entry.files:
            assert spec.urls or spec.alternatives or spec.upstream, spec.filename  # lab packs: no host
            assert spec.group in entry.layouts, (entry.name, spec.group)
            for cand in (spec, *spec.alternatives):
                shared = MIRROR / cand.filename
                if shared.is_file():
                    assert _sha256(shared) in cand.sha256 + cand.copy_sha256, cand.filename
    assert manifest.get("roxford5k").files[1].filename == manifest.get("oxford5k").files[1].filename


def test_archive_already_in_downloads_is_reused_and_verified(tmp_path):
    _need_mirror("gt_files_170407.tgz")
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "gt_files_170407.tgz").write_bytes((MIRROR / "gt_files_170407.tgz").read_bytes())
    root = download.ensure("oxford5k", tmp_path, parts=("gnd",), download=False)  # no mirror, no network
    assert len(list((root / "gt").glob("*_query.txt"))) == 55
    report = download.verify("oxford5k", tmp_path)
    gt = next(f for f in report["files"] if f["file"] == "gt_files_170407.tgz")
    assert gt["status"] == "official" and gt["extracted"]
    assert not report["ok"] and report["counts"]["images"]["found"] == 0  # the images are still missing
