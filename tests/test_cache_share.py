"""`cache pack` / `cache unpack`: round trip, refusal of corrupted members, hostile archives, the mirror."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from retrievalkit import artifacts, cache_share
from retrievalkit.datasets.download import UnsafeArchiveError
from retrievalkit.features import cache as fcache
from retrievalkit.whitening import PCAWhitening

ROWS = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
CONFIG = {"dataset": "coil100-db", "backbone": "efficientnet_lite0", "layers": ["head"], "version": 1}


def add_features(cache: Path, config=CONFIG) -> Path:
    """A feature-cache entry written through the feature cache's own begin/commit."""
    root = fcache.features_root(cache)
    tmp = fcache.begin(root, config)
    np.save(tmp / "head__gem.npy", ROWS)
    fcache.write_image_list(tmp, [f"img{i}.png" for i in range(len(ROWS))])
    sidecar = {"arrays": [{"layer": "head", "pooling": "gem", "file": "head__gem.npy",
                           "shape": list(ROWS.shape), "dtype": "float32"}], "n_images": len(ROWS)}
    return fcache.commit(tmp, config, sidecar)


def add_whitening(cache: Path, dim=8):
    return artifacts.cached("whitening", {"data": artifacts.fingerprint(ROWS), "settings": {"dim": dim}},
                            lambda: PCAWhitening(dim=dim).fit(ROWS), version=1, cache=cache)


@pytest.fixture
def instructor(tmp_path) -> Path:
    cache = tmp_path / "instructor"
    add_features(cache)
    add_whitening(cache, 8)
    add_whitening(cache, 4)
    return cache


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, str] = {}) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


# --------------------------------------------------------------------------- round trip
def test_pack_then_unpack_gives_a_student_the_same_results(instructor, tmp_path):
    (tmp_path / "share").mkdir()
    packed = cache_share.pack(tmp_path / "share", instructor)
    assert packed.path == tmp_path / "share" / cache_share.ARCHIVE_NAME and not packed.skipped
    assert len(packed.entries) == 3 and packed.entries[0].startswith("features/")
    inside = members(packed.path)
    manifest = json.loads(inside[cache_share.MANIFEST])
    assert {e["name"] for e in manifest["entries"]} == set(packed.entries)
    for entry in manifest["entries"]:
        for f in entry["files"]:
            assert len(inside[f"{entry['name']}/{f['file']}"]) == f["bytes"]

    student = tmp_path / "student"
    result = cache_share.unpack(packed.path, student)
    assert result.ok and sorted(result.installed) == sorted(packed.entries) and not result.kept
    # The student's own lookups hit: the features by their config, the whitening by its inputs.
    folder, _ = fcache.lookup(fcache.features_root(student), CONFIG)
    np.testing.assert_array_equal(np.load(folder / "head__gem.npy"), ROWS)
    w = add_whitening(student, 8)  # served from the unpacked entry, not refitted
    assert artifacts.list_cached(student)[0]["seconds"] is not None
    np.testing.assert_allclose(w.transform(ROWS), PCAWhitening(dim=8).fit(ROWS).transform(ROWS), atol=1e-6)
    assert [r["status"] for r in cache_share.summary(student)] == ["ok"] * 3
    assert not [p for p in student.iterdir() if ".tmp-" in p.name]  # the staging folder is gone

    again = cache_share.unpack(packed.path, student)
    assert sorted(again.kept) == sorted(packed.entries) and not again.installed


def test_pack_leaves_out_damaged_entries_and_follows_include(instructor, tmp_path):
    (folder, _), = [fcache.lookup(fcache.features_root(instructor), CONFIG)]
    data = folder / "head__gem.npy"
    data.write_bytes(data.read_bytes()[:-8])
    packed = cache_share.pack(tmp_path / "a.tar", instructor)
    assert [name for name, _ in packed.skipped] == [f"features/{folder.name}"]
    assert "truncated" in packed.skipped[0][1]
    only = cache_share.pack(tmp_path / "b.tar", instructor, include=["artifacts/whitening/*"])
    assert len(only.entries) == 2 and all(e.startswith("artifacts/") for e in only.entries)


def test_safe_extract_reads_a_tar_ending_in_an_npz_as_a_tar(tmp_path):
    """zipfile.is_zipfile says yes to such a tar (the .npz's zip directory is near its end)."""
    from retrievalkit.datasets.download import safe_extract

    np.savez(tmp_path / "w.npz", a=ROWS)
    archive = write_tar(tmp_path / "a.tar", {"first.txt": b"x", "w.npz": (tmp_path / "w.npz").read_bytes()})
    out = safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in out) == ["first.txt", "w.npz"]


# --------------------------------------------------------------------------- refused entries
def _rewrite(archive: Path, out: Path, change) -> Path:
    files = members(archive)
    change(files)
    return write_tar(out, files)


def test_a_corrupted_member_is_refused_and_the_rest_installed(instructor, tmp_path):
    packed = cache_share.pack(tmp_path / "good.tar", instructor)
    feature_entry = next(e for e in packed.entries if e.startswith("features/"))

    def corrupt(files):
        name = f"{feature_entry}/head__gem.npy"
        raw = bytearray(files[name])
        raw[-5] ^= 0x01  # one bit: same size, same .npy header
        files[name] = bytes(raw)

    bad = _rewrite(packed.path, tmp_path / "bad.tar", corrupt)
    student = tmp_path / "student"
    result = cache_share.unpack(bad, student)
    assert [name for name, _ in result.refused] == [feature_entry] and not result.ok
    assert "sha256" in result.refused[0][1]
    assert sorted(result.installed) == sorted(e for e in packed.entries if e != feature_entry)
    assert not (student / feature_entry).exists()
    assert fcache.lookup(fcache.features_root(student), CONFIG) is None


def test_a_mismatched_entry_is_refused_even_with_a_matching_manifest(instructor, tmp_path):
    """An entry whose sidecar was edited (manifest rewritten to match) fails the entry's own key check."""
    packed = cache_share.pack(tmp_path / "good.tar", instructor)
    entry = next(e for e in packed.entries if e.startswith("artifacts/"))

    def relabel(files):
        sidecar = json.loads(files[f"{entry}/artifact.json"])
        sidecar["key"]["parts"]["settings"]["dim"] = 99
        files[f"{entry}/artifact.json"] = json.dumps(sidecar).encode()
        manifest = json.loads(files[cache_share.MANIFEST])
        for e in manifest["entries"]:
            for f in e["files"]:
                data = files[f"{e['name']}/{f['file']}"]
                f["bytes"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        files[cache_share.MANIFEST] = json.dumps(manifest).encode()

    result = cache_share.unpack(_rewrite(packed.path, tmp_path / "relabelled.tar", relabel), tmp_path / "student")
    assert [name for name, _ in result.refused] == [entry]
    assert "key does not match" in result.refused[0][1]


def test_unlisted_files_and_entries_are_refused(instructor, tmp_path):
    packed = cache_share.pack(tmp_path / "good.tar", instructor)
    entry = packed.entries[-1]

    def smuggle(files):
        files[f"{entry}/extra.py"] = b"print('hi')"
        files["artifacts/whitening/0123456789abcdef0123/artifact.json"] = b"{}"

    result = cache_share.unpack(_rewrite(packed.path, tmp_path / "extra.tar", smuggle), tmp_path / "student")
    refused = dict(result.refused)
    assert "extra.py" in refused[entry]
    assert "not listed" in refused["artifacts/whitening/0123456789abcdef0123"]
    assert len(result.installed) == 2


def test_a_good_existing_entry_is_never_overwritten(instructor, tmp_path):
    packed = cache_share.pack(tmp_path / "share.tar", instructor)
    student = tmp_path / "student"
    add_whitening(student, 8)
    mine = next(iter((student / "artifacts" / "whitening").iterdir()))
    before = {p.name: p.stat().st_mtime_ns for p in mine.iterdir()}
    result = cache_share.unpack(packed.path, student)
    assert result.kept == [f"artifacts/whitening/{mine.name}"]
    assert {p.name: p.stat().st_mtime_ns for p in mine.iterdir()} == before


def test_a_damaged_existing_entry_is_replaced_by_the_good_copy(instructor, tmp_path):
    packed = cache_share.pack(tmp_path / "share.tar", instructor)
    student = tmp_path / "student"
    folder = add_features(student)
    (folder / "head__gem.npy").write_bytes(b"junk")
    result = cache_share.unpack(packed.path, student)
    assert f"features/{folder.name}" in result.installed
    assert fcache.lookup(fcache.features_root(student), CONFIG) is not None


# --------------------------------------------------------------------------- hostile archives
@pytest.mark.parametrize("hostile", [
    {"files": {"../escaped.txt": b"x"}},
    {"files": {"/tmp/absolute-rk-test.txt": b"x"}},
    {"links": {"features/evil": "/etc"}},
    {"links": {"features/evil/x": "../../../../outside"}},
    {"files": {"features/a/real.txt": b"x"}, "links": {"features/a/inner": "real.txt"}},  # even inside: no links
])
def test_a_hostile_archive_is_refused_whole(tmp_path, hostile):
    archive = write_tar(tmp_path / "hostile.tar", {**hostile.get("files", {}), cache_share.MANIFEST: b"{}"},
                        hostile.get("links", {}))
    student = tmp_path / "deep" / "student"
    with pytest.raises(UnsafeArchiveError, match="hostile.tar"):
        cache_share.unpack(archive, student)
    assert not (tmp_path / "deep" / "escaped.txt").exists() and not Path("/tmp/absolute-rk-test.txt").exists()
    assert [p.name for p in student.iterdir()] == []  # nothing installed, no staging left


def test_a_foreign_or_damaged_archive_names_the_file(tmp_path):
    foreign = write_tar(tmp_path / "other.tar", {"readme.txt": b"hello"})
    with pytest.raises(ValueError, match=r"other\.tar: no readable MANIFEST\.json"):
        cache_share.unpack(foreign, tmp_path / "student")
    with pytest.raises(FileNotFoundError, match="retrievalkit cache pack"):
        cache_share.unpack(tmp_path / "missing.tar", tmp_path / "student")


# --------------------------------------------------------------------------- the mirror
def test_unpack_without_a_path_reads_the_lab_mirror(instructor, tmp_path, monkeypatch):
    lab = tmp_path / "lab"
    lab.mkdir()
    cache_share.pack(lab, instructor)
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(lab))
    result = cache_share.unpack(cache=tmp_path / "student")
    assert result.archive == lab / cache_share.ARCHIVE_NAME and len(result.installed) == 3

    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="retrievalkit-cache.tar"):
        cache_share.unpack(cache=tmp_path / "student2")
    monkeypatch.delenv("RETRIEVALKIT_MIRROR")
    with pytest.raises(FileNotFoundError, match="RETRIEVALKIT_MIRROR is not set"):
        cache_share.unpack(cache=tmp_path / "student3")


def test_unpack_fetches_the_archive_from_an_http_mirror(instructor, tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    lab = tmp_path / "lab"
    lab.mkdir()
    cache_share.pack(lab, instructor)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(lab))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("RETRIEVALKIT_MIRROR", f"http://127.0.0.1:{server.server_port}/")
        result = cache_share.unpack(cache=tmp_path / "student")
    finally:
        server.shutdown()
        server.server_close()
    assert result.archive == tmp_path / "student" / "downloads" / cache_share.ARCHIVE_NAME
    assert len(result.installed) == 3 and result.ok


def test_the_cli_packs_a_cache_and_a_student_unpacks_it(instructor, tmp_path, monkeypatch, capsys):
    from retrievalkit import cli

    archive = tmp_path / "lab.tar"
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(instructor))
    assert cli.main(["cache", "pack", str(archive)]) == 0
    assert "3 entries" in capsys.readouterr().out

    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(tmp_path / "student"))
    assert cli.main(["cache", "unpack", str(archive)]) == 0
    assert "3 installed, 0 already present" in capsys.readouterr().out
    assert cli.main(["cache", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and all(line.endswith(" ok") for line in listed)

    assert cli.main(["cache", "pack"]) == 1
    assert "needs the archive's path" in capsys.readouterr().err
