"""The data hub against hostile and unlucky cases: damaged or fake archives, servers that cut
transfers short without saying how long they are, partials from another source, link chains,
decompression bombs, killed processes and several processes fetching one dataset at once.

Only local resources: tmp folders and HTTP servers on 127.0.0.1 started here. A small fake
dataset ("fake": 400 PNG-named files in one zip) stands in for COIL-100 so each case takes a second.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from retrievalkit.datasets import download, manifest
from retrievalkit.datasets.download import ChecksumError, DamagedArchiveError, DownloadError, UnsafeArchiveError

N_FILES = 400
PAYLOAD = random.Random(1).randbytes(200_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
DEADLINE_S = 60  # every wait below gives up after this


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "RETRIEVALKIT_MIRROR", "TQDM_DISABLE", download.ENV_MAX_RATIO, download.ENV_MAX_BYTES):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path / "unused_default_home"))
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


# --------------------------------------------------------------------------- a fake dataset
def _fake_zip(path: Path, n: int = N_FILES, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"fake/img{i:04d}.png", rng.randbytes(2_000))
    return path


def _fake_entry(sha256: str, urls=(), n: int = N_FILES) -> manifest.DatasetManifest:
    """Like COIL-100's entry: one zip, known only by a copy's checksum, and an expected count."""
    spec = manifest.RemoteFile(filename="fake.zip", urls=tuple(urls), group="images", target="fake",
                               copy_sha256=(sha256,), extract=True, keep="img*.png")
    return manifest.DatasetManifest(name="fake", title="fake", files=(spec,),
                                    layouts={"images": manifest.Layout("fake/img*.png", n)},
                                    n_images=n, n_queries=0, citation="none")


@pytest.fixture
def good_zip(tmp_path) -> Path:
    (tmp_path / "good").mkdir()
    return _fake_zip(tmp_path / "good" / "fake.zip")


@pytest.fixture
def fake(monkeypatch, good_zip):
    monkeypatch.setitem(manifest.MANIFEST, "fake", _fake_entry(_sha(good_zip)))
    return good_zip


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _use_official(monkeypatch, url: str) -> None:
    entry = manifest.MANIFEST["fake"]
    spec = dataclasses.replace(entry.files[0], urls=(url,))
    monkeypatch.setitem(manifest.MANIFEST, "fake", dataclasses.replace(entry, files=(spec,)))


def _extracted(home: Path, n: int = N_FILES) -> bool:
    return len(list((home / "fake" / "fake").glob("img*.png"))) == n


# --------------------------------------------------------------------------- checksums and counts
def test_mirror_copy_known_only_by_copy_checksum_is_verified(fake, monkeypatch, tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    _fake_zip(lab / "fake.zip", n=3)  # a 3-image "fake.zip": right name, wrong content
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(lab))
    with pytest.raises(ChecksumError, match="Replace the mirror's copy"):
        download.fetch("fake", tmp_path / "home", progress=False)
    assert not download.is_present("fake", tmp_path / "home")
    assert not (tmp_path / "home" / "fake" / "fake").exists()

    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(fake.parent))  # the good mirror
    root = download.fetch("fake", tmp_path / "home", progress=False)
    assert _extracted(tmp_path / "home") and root == tmp_path / "home" / "fake"


def test_short_archive_from_official_host_is_not_ready(fake, server, monkeypatch, tmp_path):
    # The official file has no published checksum: only its content can tell it is short.
    server.routes["/fake.zip"] = _fake_zip(tmp_path / "three.zip", n=3).read_bytes()
    _use_official(monkeypatch, server.url + "/fake.zip")
    home = tmp_path / "home"
    with pytest.raises(DamagedArchiveError, match=r"3 files matching fake/img\*\.png.*expects 400") as err:
        download.fetch("fake", home, progress=False)
    bad = home / "downloads" / "fake.zip.bad"
    assert str(bad) in str(err.value) and "retrievalkit datasets fetch fake" in str(err.value)
    assert bad.is_file() and not (home / "downloads" / "fake.zip").exists()
    assert not download.is_present("fake", home) and not (home / "fake" / ".complete-fake.zip").exists()

    server.routes["/fake.zip"] = fake.read_bytes()  # the host is fixed: the next fetch downloads anew
    download.fetch("fake", home, progress=False)
    assert _extracted(home)


def test_damaged_download_is_moved_aside_and_the_next_fetch_succeeds(fake, server, monkeypatch, tmp_path):
    server.routes["/fake.zip"] = fake.read_bytes()[:-5_000]  # the zip's directory is missing
    _use_official(monkeypatch, server.url + "/fake.zip")
    home = tmp_path / "home"
    with pytest.raises(DamagedArchiveError, match="fake.zip.bad") as err:
        download.fetch("fake", home, progress=False)
    assert "damaged, incomplete or was cut short" in str(err.value)
    assert not (home / "downloads" / "fake.zip").exists()
    server.routes["/fake.zip"] = fake.read_bytes()
    download.fetch("fake", home, progress=False)
    assert _extracted(home)


def test_damaged_archive_in_downloads_gives_way_to_a_good_mirror(fake, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / "downloads").mkdir(parents=True)
    (home / "downloads" / "fake.zip").write_bytes(fake.read_bytes()[: len(fake.read_bytes()) // 2])
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(fake.parent))
    download.fetch("fake", home, progress=False)  # one call: the cache is refused, the mirror used
    assert _extracted(home)
    assert (home / "downloads" / "fake.zip.bad").is_file() and not (home / "downloads" / "fake.zip").exists()


def test_deleted_files_make_a_marked_dataset_absent_again(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(fake.parent))
    home = tmp_path / "home"
    download.fetch("fake", home, progress=False)
    for png in list((home / "fake" / "fake").glob("img00*.png")):
        png.unlink()
    assert not download.is_present("fake", home)  # the marker alone does not make it ready
    download.fetch("fake", home, progress=False)
    assert _extracted(home)


# --------------------------------------------------------------------------- transfers cut short
def test_cut_without_content_length_is_detected_and_resumed(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.send_length, server.cut_after = False, 50_000
    dest = download.download_file(server.url + "/f.bin", tmp_path / "f.bin", timeout=10)  # no checksum at all
    assert dest.read_bytes() == PAYLOAD
    assert ("/f.bin", "bytes=50000-") in server.requests


def test_cut_without_content_length_nor_range_says_cut_short(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.send_length, server.honour_range, server.cut_after = False, False, 50_000
    with pytest.raises(ChecksumError) as err:
        download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA, timeout=10)
    message = str(err.value)
    assert "cut short" in message and "50,000 bytes" in message and "fetch again" in message
    assert str(tmp_path / "f.bin.bad") in message and not (tmp_path / "f.bin").exists()


def test_cut_with_content_length_tells_how_to_resume(server, tmp_path):
    server.routes["/f.bin"] = PAYLOAD
    server.honour_range, server.cut_after = False, 50_000
    with pytest.raises(DownloadError) as err:
        download.download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA, retries=0, timeout=10)
    assert "cut short" in str(err.value) and "run the same command again to resume" in str(err.value)


def test_partial_from_another_source_starts_again(server, tmp_path):
    other = bytes(reversed(PAYLOAD))  # a mirror's re-pack: same size, other bytes
    server.routes["/mirror/f.bin"], server.routes["/official/f.bin"] = other, PAYLOAD
    partial = tmp_path / "f.bin.partial"
    server.cut_after = 80_000
    with pytest.raises(DownloadError):
        download.download_file(server.url + "/mirror/f.bin", tmp_path / "f.bin", retries=0, timeout=10)
    assert partial.read_bytes() == other[:80_000]
    server.cut_after = None
    dest = download.download_file(server.url + "/official/f.bin", tmp_path / "f.bin", sha256=PAYLOAD_SHA, timeout=10)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/official/f.bin", None)  # not resumed from the mirror's bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


# --------------------------------------------------------------------------- links, bombs, leftovers
def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_link_chain_closed_inside_one_archive_is_refused(tmp_path):
    # "L" -> "sub/M/.." looks inside while sub/M does not exist; once sub/M -> ".." exists, L is the parent of dest.
    archive = _tar(tmp_path / "a.tar", [("L", "sub/M/.."), ("sub/M", "..")])
    with pytest.raises(UnsafeArchiveError, match="L"):
        download.safe_extract(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest").exists()


def test_link_chain_across_archives_cannot_write_outside(tmp_path):
    dest = tmp_path / "out" / "dest"
    download.safe_extract(_tar(tmp_path / "1.tar", [("L", "sub/M/.."), ("sub/keep.txt", b"k")]), dest)
    with pytest.raises(UnsafeArchiveError, match="leads outside"):
        download.safe_extract(_tar(tmp_path / "2.tar", [("sub/M", "..")]), dest)
    assert not (dest / "L").is_symlink()  # the escaping link is gone
    download.safe_extract(_tar(tmp_path / "3.tar", [("L/evil.txt", b"evil")]), dest)
    assert not (tmp_path / "out" / "evil.txt").exists() and (dest / "L" / "evil.txt").is_file()

    # Even with such a link left in dest (made by hand), placing files never follows it out.
    (dest / "L2").symlink_to("..")
    with pytest.raises(UnsafeArchiveError, match="L2/evil.txt"):
        download.safe_extract(_tar(tmp_path / "4.tar", [("L2/evil.txt", b"evil")]), dest)
    assert not (tmp_path / "out" / "evil.txt").exists()


def _bomb(path: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open("bomb.bin", "w") as out:
        for _ in range(megabytes):
            out.write(bytes(1 << 20))
    return path


def test_decompression_bomb_is_refused_with_the_limit_named(tmp_path, monkeypatch):
    archive = _bomb(tmp_path / "bomb.zip", 320)  # ~0.3 MB expanding to 335 MB, as in the issue
    with pytest.raises(UnsafeArchiveError, match=download.ENV_MAX_RATIO) as err:
        download.safe_extract(archive, tmp_path / "dest")
    assert "bomb.zip" in str(err.value) and download.ENV_MAX_BYTES in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]  # nothing written, no staging left

    monkeypatch.setattr(download, "EXTRACT_FLOOR_BYTES", 0)
    small = _bomb(tmp_path / "small.zip", 3)
    with pytest.raises(UnsafeArchiveError, match="small.zip"):
        download.safe_extract(small, tmp_path / "dest")
    monkeypatch.setenv(download.ENV_MAX_RATIO, "1e6")  # a genuine archive: the user raises the limit
    assert [p.stat().st_size for p in download.safe_extract(small, tmp_path / "dest")] == [3 << 20]
    monkeypatch.setenv(download.ENV_MAX_BYTES, str(1 << 20))
    with pytest.raises(UnsafeArchiveError, match="at most 1.0 MB"):
        download.safe_extract(small, tmp_path / "dest2")


def test_bytes_written_are_counted_whatever_the_size_field_says(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "EXTRACT_FLOOR_BYTES", 0)
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"x" * 1_000)
    budget = download._ExpansionBudget(archive, max_ratio=10, max_bytes=None)  # 10 KB allowed
    liar = download._Member("big.bin", "file", open_fn=lambda: io.BytesIO(bytes(50_000)), size=1)
    with pytest.raises(UnsafeArchiveError, match="a.zip"):
        download._write_member(liar, tmp_path / "big.bin", tmp_path, archive, budget, used=0)


def test_stale_staging_folders_are_removed_live_ones_kept(tmp_path):
    archive = _tar(tmp_path / "a.tar", [("f.txt", b"x")])
    out = tmp_path / "out"
    dead = out / ".dest.99999-0000aaaa.extracting"
    live = out / ".dest.12345-0000bbbb.extracting"
    for folder in (dead, live):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "half.txt").write_bytes(b"half")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running extraction holds it
    try:
        download.safe_extract(archive, out / "dest")
        assert not dead.exists() and live.is_dir()
    finally:
        os.close(fd)
    assert sorted(p.name for p in out.iterdir()) == [".dest.12345-0000bbbb.extracting", "dest"]


def test_tqdm_disable_silences_fetch(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RETRIEVALKIT_MIRROR", str(fake.parent))
    download.fetch("fake", tmp_path / "a", progress=True)
    assert "extracting fake.zip" in capsys.readouterr().err  # the bars exist
    monkeypatch.setenv("TQDM_DISABLE", "1")
    download.fetch("fake", tmp_path / "b", progress=True)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- several processes
FETCH_SCRIPT = """
import sys
from retrievalkit.datasets import download, manifest
sys.path.insert(0, {tests!r})
from test_download_hostile import _fake_entry
manifest.MANIFEST["fake"] = _fake_entry({sha!r}, urls={urls!r}, n={n!r})
download.fetch("fake", {home!r}, progress=False)
"""


def _start_fetch(home: Path, sha: str, *, mirror: str | None = None, urls=(), n: int = N_FILES) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "RETRIEVALKIT_MIRROR"}
    if mirror:
        env["RETRIEVALKIT_MIRROR"] = mirror
    script = FETCH_SCRIPT.format(tests=str(Path(__file__).parent), sha=sha, urls=tuple(urls), home=str(home), n=n)
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _all_succeed(procs) -> None:
    outputs = [p.communicate(timeout=DEADLINE_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def _assert_clean_and_whole(home: Path, n: int = N_FILES) -> None:
    assert download.verify("fake", home)["ok"] and _extracted(home, n)
    leftovers = [p.name for p in home.rglob("*")
                 if re.search(r"\.(partial|source|lock|extracting)$", p.name) or p.name.startswith(".extracting-")]
    assert leftovers == []


def test_concurrent_fetches_from_a_folder_mirror(fake, tmp_path):
    home = tmp_path / "home"
    procs = [_start_fetch(home, _sha(fake), mirror=str(fake.parent)) for _ in range(3)]
    _all_succeed(procs)
    _assert_clean_and_whole(home)


def test_concurrent_fetches_over_http(fake, server, tmp_path):
    server.routes["/fake.zip"] = fake.read_bytes()
    server.chunk_delay_s = 0.005
    home = tmp_path / "home"
    procs = [_start_fetch(home, _sha(fake), urls=[server.url + "/fake.zip"]) for _ in range(3)]
    _all_succeed(procs)
    _assert_clean_and_whole(home)
    assert len([r for r in server.requests if r[1] is None]) == 1  # downloaded once, not three times


def test_fetch_killed_mid_download_then_a_fresh_fetch_resumes(fake, server, tmp_path):
    server.routes["/fake.zip"] = fake.read_bytes()
    server.chunk_delay_s = 0.02
    home = tmp_path / "home"
    partial = home / "downloads" / "fake.zip.partial"
    victim = _start_fetch(home, _sha(fake), urls=[server.url + "/fake.zip"])
    _wait_for(lambda: partial.is_file() and partial.stat().st_size > 100_000, "a partial download")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=DEADLINE_S)
    server.chunk_delay_s = 0.0
    _all_succeed([_start_fetch(home, _sha(fake), urls=[server.url + "/fake.zip"])])  # the dead one's locks are gone
    _assert_clean_and_whole(home)
    assert server.requests[-1][1] is not None  # resumed with a Range request


def test_fetch_killed_mid_extraction_then_a_fresh_fetch_succeeds(fake, monkeypatch, tmp_path):
    n = 3_000  # long enough (~1 s) to be caught in the middle
    (tmp_path / "big").mkdir()
    big = _fake_zip(tmp_path / "big" / "fake.zip", n=n)
    home = tmp_path / "home"
    root = home / "fake"
    victim = _start_fetch(home, _sha(big), mirror=str(big.parent), n=n)
    _wait_for(lambda: root.is_dir() and any(p.name.endswith(".extracting") for p in root.iterdir()),
              "an extraction in progress")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=DEADLINE_S)
    assert (root / ".extracting-fake.zip").is_file() and not download.is_present("fake", home)
    _all_succeed([_start_fetch(home, _sha(big), mirror=str(big.parent), n=n)])
    _assert_clean_and_whole(home, n)
