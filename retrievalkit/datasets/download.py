"""The data hub: make a benchmark's files present under ``<data home>/<name>/``, safely.

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data.

For each file of :mod:`~retrievalkit.datasets.manifest` the sources are tried in this order:

1. files already in place (a copied file, or an archive whose ``.complete-<archive>`` marker
   says it was fully extracted, or a hand-placed folder), provided the folder holds the
   manifest's expected number of files; an OS package folder (Debian's Fashion-MNIST) counts
   too. Nothing is hashed here.
2. an archive already downloaded into ``<data home>/downloads/`` (checked again: a damaged one
   is moved aside to ``<name>.bad`` and the next source is tried);
3. the mirror ``$RETRIEVALKIT_MIRROR``: a folder (archives are read in place, not copied) or an
   http(s) base URL, holding the official file names flat; a copy must match the official
   checksum or a known copy's (``copy_sha256``);
4. the official URLs, only with ``download=True``.

Downloads go to ``<file>.partial`` (its source URL noted in ``<file>.partial.source``), resume
with an HTTP ``Range`` request from the same source only, are checked against the manifest's
checksums and only then renamed to their final name. Archives are extracted into a temporary
folder beside their target, refusing absolute paths, ``..``, links that leave it and
decompression bombs. Several processes may fetch the same dataset into one data home (a lab's
shared folder): a lock file per dataset and per download serialises them, and the kernel
releases it when its process dies. Ground-truth pickles are read without allowing any global.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable
from urllib.error import HTTPError
from urllib.parse import quote, unquote, urlparse
from urllib.request import Request, url2pathname, urlopen

try:
    import fcntl
except ImportError:  # Windows: byte-range locks instead
    fcntl = None
    import msvcrt

from .. import config
from . import manifest as _manifest
from .base import DatasetNotFoundError
from .manifest import DatasetManifest, RemoteFile

log = logging.getLogger(__name__)

# <data home>/downloads holds verified archives, shared by datasets (the Oxford images feed oxford5k and roxford5k).
DOWNLOADS = "downloads"
CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
RETRY_DELAY_S = 1.0  # doubled after each dropped connection, at most 30 s
LOCK_POLL_S = 0.1
USER_AGENT = "retrievalkit/0.1 (dataset fetcher; urllib)"
COMPLETE_MARKER = ".complete-{}"
EXTRACTING_MARKER = ".extracting-{}"
# Expansion limits: image archives expand ~1× (COIL-100: 131 MB zip -> 130 MB of PNGs; UKBench's
# 1.5 GB zip holds JPEGs), text ground truths ~10× (gt_files_170407.tgz: 8 KB -> 82 KB).
ENV_MAX_RATIO = "RETRIEVALKIT_MAX_EXTRACT_RATIO"
ENV_MAX_BYTES = "RETRIEVALKIT_MAX_EXTRACT_BYTES"
MAX_EXTRACT_RATIO = 100.0
MAX_EXTRACT_BYTES = 50 * 10**9
EXTRACT_FLOOR_BYTES = 100 * 10**6  # any archive may expand this far, whatever its ratio


class DownloadError(OSError):
    """Every URL of a file failed; the message lists each URL with its error."""


class ChecksumError(ValueError):
    """A file's checksum matches none of the accepted ones."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder (absolute path, ``..``, link),
    or the archive expands beyond the limits (a decompression bomb)."""


class DamagedArchiveError(ValueError):
    """An archive cannot be read to its end, or holds fewer files than the manifest expects."""


class CutShortError(ConnectionError):
    """A transfer ended before the whole file arrived."""


def _show_progress(progress) -> bool:
    # tqdm reads TQDM_DISABLE only for arguments left out; ours always passes ``disable``.
    return bool(progress) and not config.truthy(os.environ.get("TQDM_DISABLE"))


# --------------------------------------------------------------------------- locks
def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


class _Lock:
    """An exclusive lock held through an open file, for as long as the ``with`` block runs.

    The kernel drops it when its process dies, even by SIGKILL, so a crashed fetch never blocks
    the next one. The file (holding the owner's pid, for the waiting message) is removed on
    release; a waiter that locked a file removed meanwhile tries again on the new one.
    """

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fd = Path(path), what, None

    def __enter__(self):
        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            locked = _try_lock(fd)
            if locked and _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            if not locked and not told:
                owner = self.path.read_text(errors="replace").strip() if self.path.exists() else "?"
                log.warning("waiting for another process (pid %s) fetching %s; lock file %s",
                            owner or "?", self.what, self.path)
                told = True
            os.close(fd)
            time.sleep(LOCK_POLL_S)

    def __exit__(self, *exc):
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # Windows cannot remove an open file: it stays, harmless
            pass
        os.close(self.fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False



# --------------------------------------------------------------------------- paths and presence
def dataset_root(name: str, data_home=None) -> Path:
    """``<data home>/<name>``: where :func:`ensure` puts a dataset (not necessarily present)."""
    return config.data_home(data_home) / _manifest.get(name).name


def downloads_dir(data_home=None) -> Path:
    return config.data_home(data_home) / DOWNLOADS


def _count(root: Path, pattern: str) -> int:
    return sum(1 for p in root.glob(pattern) if p.is_file())


def _file_present(spec: RemoteFile, root: Path) -> bool:
    if spec.extract:
        return (root / COMPLETE_MARKER.format(spec.filename)).is_file()
    return (root / spec.target).is_file()


def _extraction_interrupted(root: Path) -> bool:
    return root.is_dir() and next(root.glob(EXTRACTING_MARKER.format("*")), None) is not None


def _counts_ok(ds: DatasetManifest, group: str, root: Path) -> bool:
    layout = ds.layouts.get(group)
    return layout is None or _count(root, layout.pattern) >= layout.at_least


def _group_present(ds: DatasetManifest, group: str, root: Path) -> bool:
    """Cheap check: markers and file names only, no hashing.

    The group's folder must hold the manifest's expected number of files, markers or not (an
    archive can extract cleanly and still be short). A hand-placed folder (no markers) is
    accepted on its count, except where an extraction of ours was interrupted.
    """
    if not _counts_ok(ds, group, root):
        return False
    return all(_file_present(f, root) for f in ds.files_in([group])) or (
        group in ds.layouts and not _extraction_interrupted(root))


def _select_groups(ds: DatasetManifest, parts) -> tuple[str, ...]:
    if parts is None:
        return ds.groups
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    unknown = sorted(set(parts) - set(ds.groups))
    if unknown:
        raise ValueError(f"{ds.name} has no file group {unknown}; its groups are {', '.join(ds.groups)}")
    return parts


def locate(name: str, data_home=None, parts=None) -> Path | None:
    """The folder already holding the dataset's files (``<data home>/<name>`` or an OS package
    folder such as Debian's Fashion-MNIST), or None. Cheap: nothing is hashed or copied."""
    ds = _manifest.get(name)
    return _present_root(ds, dataset_root(name, data_home), _select_groups(ds, parts))


def is_present(name: str, data_home=None, parts=None) -> bool:
    """Whether :func:`ensure` would return at once (no copy, no download)."""
    return locate(name, data_home, parts) is not None


def _present_root(ds: DatasetManifest, root: Path, groups) -> Path | None:
    for candidate in (root, *map(Path, ds.system_dirs)):
        if candidate.is_dir() and all(_group_present(ds, g, candidate) for g in groups):
            return candidate
    return None


# --------------------------------------------------------------------------- checksums
def file_digests(path, *, md5: bool = False, progress=None) -> dict[str, str]:
    """sha256 (and md5 when asked) of a file, read once in 1 MiB chunks."""
    from tqdm.auto import tqdm

    path = Path(path)
    hashes = {"sha256": hashlib.sha256()}
    if md5:
        hashes["md5"] = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"checking {path.name}", disable=not _show_progress(progress),
                                     leave=False) as bar:
        while chunk := fh.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {k: h.hexdigest() for k, h in hashes.items()}


def _as_set(values) -> set[str]:
    if values is None:
        return set()
    if isinstance(values, str):
        return {values.lower()}
    return {v.lower() for v in values}


def _check_checksum(path: Path, sha256=None, md5=None, *, shown_name: str | None = None) -> dict[str, str] | None:
    """Raise :class:`ChecksumError` unless the file matches one accepted sha256 or md5.

    With neither given nothing is checked (and nothing is hashed).
    """
    accepted_sha, accepted_md5 = _as_set(sha256), _as_set(md5)
    if not accepted_sha and not accepted_md5:
        return None
    digests = file_digests(path, md5=bool(accepted_md5))
    if digests["sha256"] in accepted_sha or digests.get("md5") in accepted_md5:
        return digests
    expected = sorted(accepted_sha) + [f"md5:{m}" for m in sorted(accepted_md5)]
    actual = digests["sha256"] + (f" (md5 {digests['md5']})" if "md5" in digests else "")
    raise ChecksumError(
        f"{shown_name or path}: checksum mismatch: expected sha256 {' or '.join(expected)}, got {actual}"
    )


def _accepted_checksums(spec: RemoteFile, *, official_source: bool = False) -> dict:
    """The manifest's rule: official checksums plus known re-packed copies.

    A file known only by copies' checksums (COIL-100: the official one was never published)
    must match one of them when it comes from a mirror, which holds such copies. From the
    official host, or from ``downloads/`` where an official download may lie, it cannot be
    judged by its hash and is judged by its content instead (archive CRCs, expected counts).
    """
    if spec.has_official_checksum:
        return {"sha256": spec.sha256 + spec.copy_sha256 or None, "md5": spec.md5 or None}
    if spec.copy_sha256 and not official_source:
        return {"sha256": spec.copy_sha256, "md5": None}
    return {"sha256": None, "md5": None}


def checksum_status(path, spec: RemoteFile, *, progress=None) -> dict:
    """How ``path`` compares with ``spec``'s checksums: ``official``, ``known copy``,
    ``no published checksum`` or ``MISMATCH``."""
    digests = file_digests(path, md5=bool(spec.md5), progress=progress)
    if digests["sha256"] in spec.sha256 or digests.get("md5") in spec.md5:
        status = "official"
    elif digests["sha256"] in spec.copy_sha256:
        status = "known copy"
    elif not spec.has_official_checksum:
        status = "no published checksum"
    else:
        status = "MISMATCH"
    return {"status": status, "sha256": digests["sha256"], "expected": list(spec.sha256 + spec.copy_sha256),
            "expected_md5": list(spec.md5)}


def _set_aside(path: Path) -> Path:
    """Move a file that failed its checks to ``<name>.bad`` (replacing an older one), so the next
    fetch downloads it anew instead of trusting it."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    return bad


# --------------------------------------------------------------------------- downloading
def _partial_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".partial")


def _source_record(partial: Path) -> Path:
    return partial.with_name(partial.name + ".source")


def _claim_partial(partial: Path, source: str) -> None:
    """Keep ``partial`` only if ``source`` wrote it: a mirror's re-zip and the official file
    differ, so bytes from one must never be finished from the other."""
    record = _source_record(partial)
    if partial.exists():
        previous = record.read_text().strip() if record.is_file() else None
        if previous != source:
            log.info("%s came from %s; starting again from %s", partial.name, previous or "an unknown source", source)
            partial.unlink()
    record.write_text(source)


def _drop_partial(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _source_record(partial).unlink(missing_ok=True)


def _local_source(url) -> Path | None:
    """A local path for plain paths and file:// URLs, else None."""
    if isinstance(url, os.PathLike):
        return Path(url)
    parsed = urlparse(str(url))
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme == "" or re.fullmatch(r"[A-Za-z]", parsed.scheme):  # a drive letter, "C:\\..." on Windows
        return Path(url)
    return None


def _progress_bar(total, initial, name, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, disable=not _show_progress(progress), leave=False)


def _copy_local(source: Path, partial: Path, progress) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {source}")
    with source.open("rb") as src, partial.open("wb") as out, \
            _progress_bar(source.stat().st_size, 0, source.name, progress) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    match = re.match(r"bytes\s+[^/]*/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def _fetch_url(url: str, partial: Path, progress, timeout: float) -> bool:
    """Download ``url`` into ``partial``, continuing it when it already holds some bytes.

    Raises ``OSError`` when the transfer stops early, leaving the bytes received so far. Returns
    whether the file is known to be whole; False when the server sent no length and cannot
    say (the checksum, or the archive's own checks, then decide).
    """
    offset = partial.stat().st_size if partial.exists() else 0
    request = Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and offset:
            # Nothing left to send: either the partial is already whole or it is longer than the file.
            if _range_total(err.headers.get("Content-Range")) == offset:
                return True
            partial.unlink()
            return _fetch_url(url, partial, progress, timeout)
        raise
    with response:
        resumed = offset > 0 and getattr(response, "status", None) == 206
        if resumed and _range_start(response.headers.get("Content-Range")) != offset:
            partial.unlink()
            raise ConnectionError(f"{url} answered another byte range than asked; starting again")
        if offset and not resumed:
            log.info("%s ignored the Range request; downloading %s from the start", url, partial.name)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        # A chunked body is framed: http.client raises if it stops early. Only a body ended by
        # closing the connection cannot tell a cut from the end.
        framed = total is not None or getattr(response, "chunked", False)
        with partial.open("ab" if resumed else "wb") as out, \
                _progress_bar(total, offset, partial.name[: -len(".partial")], progress) as bar:
            read = getattr(response, "read1", response.read)  # what has arrived, so a kill keeps it
            while chunk := read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    received = partial.stat().st_size
    if total is not None and received < total:
        raise CutShortError(f"the download was cut short: connection closed after {received:,} of {total:,} bytes")
    return framed or _confirm_end(url, received, timeout)


def _confirm_end(url: str, received: int, timeout: float) -> bool:
    """After a body sent without a length, ask the server for the bytes after ``received``.

    416 confirms the end; 206 means the connection was cut early (raises, and the retry
    resumes); a server ignoring ``Range`` cannot tell: returns False.
    """
    request = Request(url, headers={"User-Agent": USER_AGENT, "Range": f"bytes={received}-"})
    try:
        with urlopen(request, timeout=timeout) as response:
            status, total = response.status, _range_total(response.headers.get("Content-Range"))
    except HTTPError as err:
        total = _range_total(err.headers.get("Content-Range"))
        if err.code == 416 and total in (None, received):
            return True
        if err.code == 416:
            raise ConnectionError(f"{url}: the server holds {total:,} bytes, {received:,} were received") from None
        return False
    if status == 206:
        of = f" of {total:,}" if total else ""
        raise CutShortError(f"the download was cut short: {received:,}{of} bytes arrived "
                            "(the server sent no Content-Length)")
    log.warning("%s sent no Content-Length and ignores Range requests: cannot tell whether all %s bytes "
                "arrived; the checksum or the archive's own checks will tell", url, f"{received:,}")
    return False


def _finish(partial: Path, dest: Path, sha256, md5, *, whole: bool = True) -> Path:
    """Verify ``partial`` and rename it to ``dest``; a bad file is moved aside to ``<name>.bad``."""
    try:
        _check_checksum(partial, sha256, md5, shown_name=dest.name)
    except ChecksumError as err:
        _source_record(partial).unlink(missing_ok=True)
        bad = dest.with_name(dest.name + ".bad")
        os.replace(partial, bad)
        cause = "" if whole else (
            f" The server sent no Content-Length, so this is most likely a download cut short "
            f"({bad.stat().st_size:,} bytes arrived).")
        raise ChecksumError(
            f"{err}.{cause} The file was moved aside to {bad}. Delete it and fetch again; if it keeps "
            f"happening the host (or your RETRIEVALKIT_MIRROR copy) serves a different file: replace "
            f"that copy, or report the new checksum."
        ) from None
    _source_record(partial).unlink(missing_ok=True)
    os.replace(partial, dest)
    return dest


def download_file(urls, dest, *, sha256=None, md5=None, progress=None,
                  timeout: float = DEFAULT_TIMEOUT, retries: int = 2) -> Path:
    """Fetch the first working source of ``urls`` to ``dest``, verified, renamed atomically.

    ``urls``: one or several http(s)/ftp URLs, local paths or file:// URLs (a mirror folder),
    tried in order. Bytes go to ``<dest>.partial``; an interrupted HTTP transfer is resumed with
    a ``Range`` request (``retries`` times within this call, and again by the next call), only
    from the URL that started it, and a server that ignores ``Range`` is read from the start.
    ``sha256`` / ``md5``: one accepted checksum or a collection of them. Nothing ever appears
    under ``dest`` unverified. Processes fetching the same ``dest`` take turns (a lock file
    beside it); one finding ``dest`` already there and matching a checksum returns it.
    Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    urls = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(dest)
    errors = []
    with _Lock(dest.with_name(f".{dest.name}.lock"), dest.name):
        if dest.is_file() and (sha256 or md5):
            try:  # another process finished it while we waited
                _check_checksum(dest, sha256, md5)
                return dest
            except ChecksumError:
                pass
        for url in urls:
            local = _local_source(url)
            try:
                _claim_partial(partial, str(url))
                if local is not None:
                    _copy_local(local, partial, progress)
                    whole = True
                else:
                    whole = _fetch_with_retries(str(url), partial, progress, timeout, retries)
            except (OSError, http.client.HTTPException) as err:
                errors.append(f"{url}: {type(err).__name__}: {err}")
                log.info("could not fetch %s (%s)", url, err)
                continue
            return _finish(partial, dest, sha256, md5, whole=whole)
        if partial.exists():
            kept = (f"; {partial.stat().st_size:,} bytes kept in {partial}: run the same command again to "
                    "resume, or set RETRIEVALKIT_MIRROR to a folder or URL holding the file")
        else:
            _drop_partial(partial)
            kept = ""
    raise DownloadError(f"could not fetch {dest.name}{kept}:\n  " + "\n  ".join(errors or ["no URL given"]))


def _fetch_with_retries(url: str, partial: Path, progress, timeout: float, retries: int) -> bool:
    for attempt in range(retries + 1):
        try:
            return _fetch_url(url, partial, progress, timeout)
        except HTTPError:
            raise  # 404, 403 …: asking again will not help
        except (OSError, http.client.HTTPException) as err:
            if attempt == retries:
                raise
            log.info("%s interrupted (%s); resuming (%d/%d)", url, err, attempt + 1, retries)
            time.sleep(min(RETRY_DELAY_S * 2.0 ** attempt, 30.0))


# --------------------------------------------------------------------------- safe extraction
def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name))


def _member_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path components of a member, refusing absolute paths and ``..``."""
    if _is_absolute(name):
        raise UnsafeArchiveError(f"{archive.name}: refusing member {name!r}: absolute path")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive.name}: refusing member {name!r}: '..' leaves the extraction folder")
    return parts


def _check_link(name: str, link_target: str, relative_to: PurePosixPath, archive: Path) -> PurePosixPath:
    """The link's target inside the extraction folder; refuse one that points outside it."""
    if _is_absolute(link_target):
        raise UnsafeArchiveError(f"{archive.name}: refusing link {name!r} -> {link_target!r}: absolute target")
    resolved: list[str] = list(relative_to.parts)
    for part in re.split(r"[/\\]", link_target):
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing link {name!r} -> {link_target!r}: points outside the extraction folder"
                )
            resolved.pop()
        else:
            resolved.append(part)
    return PurePosixPath(*resolved)


class _Member:
    """What both archive formats offer: a name, a kind, a declared size, a link target and an opener."""

    def __init__(self, name, kind, link_target=None, open_fn=None, size=0):
        self.name, self.kind, self.link_target, self.open, self.size = name, kind, link_target, open_fn, size


def _tar_members(archive: Path) -> Iterable[_Member]:
    # Stream mode reads a .tgz in one pass; each member's data is read while it is current.
    with tarfile.open(archive, "r|*") as tar:
        for info in tar:
            if info.isdir():
                yield _Member(info.name, "dir")
            elif info.issym():
                yield _Member(info.name, "symlink", info.linkname)
            elif info.islnk():
                yield _Member(info.name, "hardlink", info.linkname)
            elif info.isfile():
                yield _Member(info.name, "file", open_fn=lambda info=info: tar.extractfile(info), size=info.size)
            else:
                yield _Member(info.name, "special")


def _zip_members(archive: Path) -> Iterable[_Member]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                yield _Member(info.filename, "dir")
            elif stat.S_ISLNK(mode):
                yield _Member(info.filename, "symlink", zf.read(info).decode("utf-8", "replace"))
            else:
                yield _Member(info.filename, "file", open_fn=lambda info=info: zf.open(info), size=info.file_size)


def _archive_members(archive: Path) -> Iterable[_Member]:
    # Tar first: is_zipfile looks for a zip directory near the end, which an uncompressed tar
    # ending with a .zip/.npz member has too (a cache archive); a zip never starts with a tar header.
    if tarfile.is_tarfile(archive):
        return _tar_members(archive)
    if zipfile.is_zipfile(archive):
        return _zip_members(archive)
    raise DamagedArchiveError(f"{archive} is neither a zip nor a tar archive (or its end is missing)")


def _inside(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base + os.sep)


def _size_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


class _ExpansionBudget:
    """How many bytes an archive may expand to: ``max_ratio`` × its size (never below
    ``EXTRACT_FLOOR_BYTES``), at most ``max_bytes``. Both default to the environment."""

    def __init__(self, archive: Path, max_ratio, max_bytes):
        env_ratio, env_bytes = os.environ.get(ENV_MAX_RATIO), os.environ.get(ENV_MAX_BYTES)
        try:
            self.ratio = float(max_ratio or env_ratio or MAX_EXTRACT_RATIO)
            self.cap = int(float(max_bytes or env_bytes or MAX_EXTRACT_BYTES))
        except ValueError:
            raise ValueError(f"{ENV_MAX_RATIO}={env_ratio!r} / {ENV_MAX_BYTES}={env_bytes!r}: "
                             "expected numbers (a ratio, a number of bytes)") from None
        self.archive, self.size = archive, archive.stat().st_size
        self.allowed = min(self.cap, max(self.ratio * self.size, EXTRACT_FLOOR_BYTES))

    def check(self, total: int) -> None:
        if total > self.allowed:
            raise UnsafeArchiveError(
                f"{self.archive.name}: refusing to expand {_size_text(self.size)} to more than "
                f"{_size_text(self.allowed)} (limits: {self.ratio:g}× the archive, at most {_size_text(self.cap)}): "
                f"a decompression bomb or the wrong file. If it is genuine, raise {ENV_MAX_RATIO} or "
                f"{ENV_MAX_BYTES} (safe_extract's max_ratio / max_bytes)."
            )


def _write_member(member: _Member, out: Path, staging: Path, archive: Path,
                  budget: _ExpansionBudget, used: int) -> int:
    """Write one member; returns the bytes written, counted as they come (a size field can lie)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # A link extracted earlier must not let a later file escape through it.
    if not _inside(out, staging):
        raise UnsafeArchiveError(f"{archive.name}: refusing member {member.name!r}: it resolves outside the folder")
    if out.is_symlink():
        out.unlink()
    written = 0
    with member.open() as src, out.open("wb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            budget.check(used + written)
            dst.write(chunk)
    return written


def _check_links(folder: Path, archive: Path) -> None:
    """Refuse any link under ``folder`` whose chain of links ends outside it (removing it).

    Each link is checked when made, but a chain can be closed later (``a -> b/c/..`` made
    before ``b/c -> ..``), even by another archive extracted into the same folder.
    """
    for parent, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(parent, name)
            if path.is_symlink() and not _inside(path, folder):
                target = os.readlink(path)
                path.unlink()
                raise UnsafeArchiveError(f"{archive.name}: refusing link {path.relative_to(folder)} -> {target}: "
                                         f"through other links it leads outside {folder}")


def _place_tree(staging: Path, dest: Path, archive: Path) -> None:
    """Move the staged files into ``dest``: one rename when ``dest`` is new, else file by file."""
    if not dest.exists():
        os.replace(staging, dest)
        return
    placed_link = False
    for folder, dirnames, filenames in os.walk(staging):
        links = [d for d in dirnames if os.path.islink(os.path.join(folder, d))]
        for name in filenames + links:
            path = Path(folder, name)
            target = dest / path.relative_to(staging)
            # A link already in dest (from an earlier archive) must not carry a file out of it.
            if not _inside(target.parent, dest):
                raise UnsafeArchiveError(f"{archive.name}: refusing to place {path.relative_to(staging)}: "
                                         f"a link already in {dest} leads it outside")
            target.parent.mkdir(parents=True, exist_ok=True)
            placed_link |= path.is_symlink()
            os.replace(path, target)
    shutil.rmtree(staging)
    if placed_link:
        _check_links(dest, archive)


def _lock_folder(folder: Path) -> int | None:
    """Hold a lock on ``folder`` while a live process extracts into it (None where folders cannot be locked)."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    if not _try_lock(fd):
        os.close(fd)
        raise FileExistsError(folder)  # a cleaner holds it: it is being removed
    return fd


def _make_staging_folder(dest: Path) -> tuple[Path, int | None]:
    # os.mkdir honours the umask (mkdtemp would make it 0700, and it becomes ``dest`` by rename).
    while True:
        staging = dest.parent / f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.extracting"
        try:
            staging.mkdir()
            fd = _lock_folder(staging)
            if staging.is_dir():
                return staging, fd
            if fd is not None:
                os.close(fd)
        except (FileExistsError, FileNotFoundError):
            continue


STALE_STAGING_S = 24 * 3600  # where folders cannot be locked (Windows), age tells a dead extraction


def _remove_stale_staging(dest: Path) -> None:
    """Remove temporary folders left beside ``dest`` by killed extractions; a live process's
    folder stays (it holds a lock on it, released by the kernel when the process dies)."""
    for old in dest.parent.glob(f".{glob.escape(dest.name)}.*.extracting"):
        if not old.is_dir() or old.is_symlink():
            continue
        if fcntl is None:
            if time.time() - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old, ignore_errors=True)
            continue
        fd = os.open(old, os.O_RDONLY)
        try:
            if _try_lock(fd):
                log.info("removing %s, left by an extraction that was killed", old)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


def safe_extract(archive, dest, *, flatten: bool = False, members_filter: Callable[[str], bool] | None = None,
                 progress=None, max_ratio: float | None = None, max_bytes: int | None = None) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest`` without letting it write elsewhere.

    Absolute member paths, ``..`` components and links pointing outside ``dest`` (directly or
    through a chain of links) raise :class:`UnsafeArchiveError` naming the member. So does an
    archive expanding to more than ``max_ratio`` × its size (default 100, at least 100 MB allowed)
    or ``max_bytes`` in all (default 50 GB); ``$RETRIEVALKIT_MAX_EXTRACT_RATIO`` and
    ``$RETRIEVALKIT_MAX_EXTRACT_BYTES`` change the defaults. ``flatten`` drops the members' folders
    (``paris/defense/x.jpg`` → ``dest/x.jpg``; links are then skipped); ``members_filter(name)``
    picks members by their name in the archive. Members are written to a temporary folder beside
    ``dest`` and moved in only when the whole archive has been read, so an interrupted
    extraction leaves nothing half-done in ``dest``; temporary folders of killed extractions are
    removed by the next one. Returns the extracted paths.
    Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    from tqdm.auto import tqdm

    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    budget = _ExpansionBudget(archive, max_ratio, max_bytes)
    _remove_stale_staging(dest)
    staging, held = _make_staging_folder(dest)
    written: list[PurePosixPath] = []
    seen: set[PurePosixPath] = set()
    declared = used = 0
    try:
        for member in tqdm(_archive_members(archive), desc=f"extracting {archive.name}", unit=" files",
                           disable=not _show_progress(progress), leave=False):
            parts = _member_parts(member.name, archive)
            if member.kind in ("symlink", "hardlink"):
                base = PurePosixPath(*parts[:-1]) if member.kind == "symlink" else PurePosixPath()
                inner_target = _check_link(member.name, member.link_target, base, archive)
            if not parts or member.kind in ("dir", "special"):
                continue
            if members_filter is not None and not members_filter(member.name):
                continue
            rel = PurePosixPath(parts[-1]) if flatten else PurePosixPath(*parts)
            out = staging / rel
            if member.kind == "file":
                if flatten and rel in seen:
                    raise ValueError(f"{archive.name}: two members flatten to the same name {rel} ({member.name!r})")
                declared += member.size
                budget.check(max(declared, used))  # refuse a bomb before writing it
                used += _write_member(member, out, staging, archive, budget, used)
            elif flatten:
                log.warning("%s: skipping link %s while flattening", archive.name, member.name)
                continue
            elif member.kind == "symlink":
                out.parent.mkdir(parents=True, exist_ok=True)
                # The lexical check above cannot see through links extracted earlier; the real path can.
                if not _inside(out.parent / member.link_target, staging):
                    raise UnsafeArchiveError(
                        f"{archive.name}: refusing link {member.name!r} -> {member.link_target!r}: "
                        "points outside the extraction folder"
                    )
                os.symlink(member.link_target, out)
            else:  # hard link: a copy of a member extracted before it
                source = staging / inner_target
                if not source.is_file() or not _inside(source, staging):
                    log.warning("%s: skipping hard link %s to a member not extracted", archive.name, member.name)
                    continue
                used += source.stat().st_size  # copies of one big member are a bomb too
                budget.check(used)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, out)
            written.append(rel)
            seen.add(rel)
        if not flatten:
            _check_links(staging, archive)
        _place_tree(staging, dest, archive)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if held is not None:
            os.close(held)
    return [dest / rel for rel in written]


# --------------------------------------------------------------------------- ground-truth pickles
class _NoGlobalsUnpickler(pickle.Unpickler):
    """Builds only the pickle's own containers and scalars: every global is refused.

    The official revisitop files hold dicts, lists, floats, ints and strings only (checked with
    ``pickletools`` on both: no GLOBAL opcode, no numpy arrays), so nothing needs allowing.
    """

    def __init__(self, file, source: Path):
        super().__init__(file)
        self.source = source

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"{self.source}: refusing global {module}.{name}: a ground-truth file holds only lists, "
            "dicts, numbers and strings, so this file is not a revisitop ground truth (or was tampered with)"
        )


def load_gnd_pickle(path) -> dict:
    """Read a revisitop ground-truth pickle (``gnd_roxford5k.pkl``, ``gnd_rparis6k.pkl``) safely.

    Returns ``{"imlist", "qimlist", "gnd": [{"bbx", "easy", "hard", "junk"}, …]}``. Any class or
    function reference in the file raises ``pickle.UnpicklingError`` instead of running code.
    Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    path = Path(path)
    with path.open("rb") as fh:
        try:
            data = _NoGlobalsUnpickler(fh, path).load()
        except EOFError as err:  # empty or cut short: pickle's own message names no file
            raise pickle.UnpicklingError(f"{path}: truncated ground-truth pickle ({err or 'empty file'})") from err
        except pickle.UnpicklingError as err:
            if str(path) in str(err):  # our refusal of a global already names the file
                raise
            raise pickle.UnpicklingError(f"{path}: {err}") from err
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- ensure / fetch / verify
def _members_filter(spec: RemoteFile) -> Callable[[str], bool] | None:
    if spec.keep is None:
        return None
    return lambda name: fnmatch.fnmatch(PurePosixPath(name.replace("\\", "/")).name, spec.keep)


def _advice(ds: DatasetManifest, archive: Path, ours: bool) -> str:
    """What to do about a bad archive: ours is moved aside so the next fetch downloads it anew;
    a mirror folder's copy is read-only to us and must be replaced there."""
    if ours:
        bad = _set_aside(archive)
        return (f"It was moved aside to {bad}: run `retrievalkit datasets fetch {ds.name}` again to get a "
                f"fresh copy (and delete the .bad file).")
    return (f"Replace the mirror's copy {archive} with a good one (or unset RETRIEVALKIT_MIRROR) and run "
            f"`retrievalkit datasets fetch {ds.name}` again.")


def _extract_into(ds: DatasetManifest, spec: RemoteFile, archive: Path, root: Path, source: str, progress,
                  *, ours: bool) -> None:
    """Extract one official archive into the dataset root, bracketed by markers.

    The completion marker is written only when the archive read to its end and, where it is
    its group's only file, gave the manifest's expected number of files.
    """
    root.mkdir(parents=True, exist_ok=True)
    extracting = root / EXTRACTING_MARKER.format(spec.filename)
    extracting.touch()
    try:
        files = safe_extract(archive, root / spec.target, flatten=spec.flatten,
                             members_filter=_members_filter(spec), progress=progress)
        if not files:
            raise DamagedArchiveError(f"no member matches {spec.keep!r}: is this really {spec.filename}?")
        layout = ds.layouts.get(spec.group)
        if len(ds.files_in([spec.group])) == 1 and not _counts_ok(ds, spec.group, root):
            raise DamagedArchiveError(f"it gave {_count(root, layout.pattern):,} files matching "
                                      f"{layout.pattern}, the manifest expects {layout.expected:,}")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, DamagedArchiveError) as err:
        raise DamagedArchiveError(
            f"could not extract {archive.name} ({type(err).__name__}: {err}): the archive is damaged, "
            f"incomplete or was cut short. {_advice(ds, archive, ours)}"
        ) from err
    except UnsafeArchiveError as err:
        raise UnsafeArchiveError(f"{err}. {_advice(ds, archive, ours)}") from None
    record = {"archive": spec.filename, "source": source, "files": len(files), "target": spec.target,
              "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    marker = root / COMPLETE_MARKER.format(spec.filename)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, marker)
    extracting.unlink()


def _install(ds: DatasetManifest, spec: RemoteFile, path: Path, root: Path, source: str, progress, *,
             ours: bool, checks: dict) -> None:
    """Put a verified file in place: extract an archive, or copy a plain file to its target."""
    if spec.extract:
        _extract_into(ds, spec, path, root, source, progress, ours=ours)
    elif path != root / spec.target:
        download_file([path], root / spec.target, **checks, progress=progress)


def _mirror_url(mirror: str, filename: str) -> str:
    return mirror.rstrip("/") + "/" + quote(filename)


def _from_mirror(ds: DatasetManifest, spec: RemoteFile, mirror: str, root: Path, downloads: Path, progress,
                 tried: list) -> bool:
    local = _local_source(mirror)
    checks = _accepted_checksums(spec)
    if local is not None:
        source = local / spec.filename
        if not source.is_file():
            tried.append(f"mirror folder: no {source}")
            return False
        if spec.extract:
            # Read the archive where it is (a lab's shared folder is not copied into every home).
            try:
                _check_checksum(source, **checks)
            except ChecksumError as err:
                raise ChecksumError(f"{err}. Replace the mirror's copy, or unset RETRIEVALKIT_MIRROR.") from None
        _install(ds, spec, source, root, f"mirror {source}", progress, ours=False, checks=checks)
        return True
    url = _mirror_url(mirror, spec.filename)
    dest = downloads / spec.filename if spec.extract else root / spec.target
    try:
        path = download_file([url], dest, **checks, progress=progress)
    except DownloadError as err:
        tried.append(f"mirror {url}: {str(err).splitlines()[-1].strip()}")
        return False
    _install(ds, spec, path, root, f"mirror {url}", progress, ours=True, checks=checks)
    return True


def _from_official(ds: DatasetManifest, spec: RemoteFile, root: Path, downloads: Path, progress,
                   tried: list) -> bool:
    if not spec.urls:
        return False
    dest = downloads / spec.filename if spec.extract else root / spec.target
    checks = _accepted_checksums(spec, official_source=True)
    try:
        path = download_file(spec.urls, dest, **checks, progress=progress)
    except DownloadError as err:
        tried.append(str(err))
        return False
    _install(ds, spec, path, root, spec.urls[0], progress, ours=True, checks=checks)
    return True


def _from_cache(ds: DatasetManifest, spec: RemoteFile, root: Path, downloads: Path, progress,
                tried: list) -> bool:
    """Extract an archive already in ``downloads/``, checked again (it may be damaged since, or
    come from an older version); a bad one is moved aside so the other sources get their turn."""
    cached = downloads / spec.filename
    if not (spec.extract and cached.is_file()):
        return False
    checks = _accepted_checksums(spec, official_source=True)  # it may be the official file
    try:
        _check_checksum(cached, **checks, shown_name=str(cached))
        _install(ds, spec, cached, root, f"cached {cached}", progress, ours=True, checks=checks)
        return True
    except ChecksumError as err:
        log.warning("%s; moved aside to %s, trying the other sources", err, _set_aside(cached))
    except DamagedArchiveError as err:
        log.warning("%s Trying the other sources.", err)
    tried.append(f"cached {cached}: damaged, moved aside to {cached.name}.bad")
    return False


def _obtain(ds: DatasetManifest, spec: RemoteFile, root: Path, downloads: Path, *, download: bool,
            progress) -> None:
    """Bring one manifest file (or one of its alternatives) into place, or raise."""
    candidates = (spec, *spec.alternatives)
    tried: list[str] = []
    for cand in candidates:
        if _from_cache(ds, cand, root, downloads, progress, tried):
            return
    mirror = config.mirror()
    if mirror:
        for cand in candidates:
            if _from_mirror(ds, cand, mirror, root, downloads, progress, tried):
                return
    else:
        tried.append("no RETRIEVALKIT_MIRROR set")
    if download:
        for cand in candidates:
            if _from_official(ds, cand, root, downloads, progress, tried):
                return
    else:
        tried.append("download=False: official URLs not tried")
    names = " or ".join(c.filename for c in candidates)
    hint = (
        f"missing {names} ({'; '.join(tried)}). Run `retrievalkit datasets fetch {ds.name}`, or set "
        f"RETRIEVALKIT_MIRROR to a folder or http(s) URL holding {names}."
    )
    if ds.extra_hint:
        hint += " " + ds.extra_hint
    raise DatasetNotFoundError(ds.name, root / spec.target, hint)


def _check_group(ds: DatasetManifest, group: str, root: Path, downloads: Path) -> None:
    """After all of a group's files are in place, its folder must hold the expected count (a
    group fed by several archives, like Paris's two, can only be counted here)."""
    if _counts_ok(ds, group, root):
        return
    layout = ds.layouts[group]
    found = _count(root, layout.pattern)
    archives = [c for f in ds.files_in([group]) for c in (f, *f.alternatives) if c.extract]
    for cand in archives:
        (root / COMPLETE_MARKER.format(cand.filename)).unlink(missing_ok=True)
        if (downloads / cand.filename).is_file():
            _set_aside(downloads / cand.filename)
    raise DamagedArchiveError(
        f"{root / layout.pattern}: {found:,} files after extracting {', '.join(c.filename for c in archives)}, "
        f"the manifest expects {layout.expected:,}: an archive is incomplete. Those in {downloads} were moved "
        f"aside to <name>.bad; run `retrievalkit datasets fetch {ds.name}` again (or replace the "
        f"RETRIEVALKIT_MIRROR copies)."
    )


def ensure(name: str, data_home=None, *, download: bool = True, parts=None, progress=None,
           keep_archives: bool = True) -> Path:
    """Make dataset ``name``'s files present and return the folder holding them.

    ``parts`` restricts to some file groups of the manifest, e.g. ``("gnd",)`` for only the
    ground truth. Sources, in order: files already in place (returned at once, nothing hashed;
    an OS package folder such as Debian's Fashion-MNIST counts), archives already in
    ``<data home>/downloads``, ``$RETRIEVALKIT_MIRROR``, then the official URLs when ``download``
    is true. Raises :class:`DatasetNotFoundError` naming the missing path and the fix.
    Processes sharing a data home take turns on a dataset (``<data home>/.<name>.lock``): the
    later ones find it ready. ``keep_archives=False`` deletes downloaded archives once extracted
    (``verify`` can then only count files). Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    ds = _manifest.get(name)
    root = dataset_root(ds.name, data_home)
    groups = _select_groups(ds, parts)
    present = _present_root(ds, root, groups)
    if present is not None:
        return present
    downloads = downloads_dir(data_home)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(root.parent / f".{ds.name}.lock", ds.name):
        present = _present_root(ds, root, groups)  # another process may have fetched it meanwhile
        if present is not None:
            return present
        for group in groups:
            if _group_present(ds, group, root):
                continue
            specs = ds.files_in([group])
            stale = all(_file_present(f, root) for f in specs)  # every file says done, yet files are missing
            for spec in specs:
                if stale or not _file_present(spec, root):
                    _obtain(ds, spec, root, downloads, download=download, progress=progress)
            _check_group(ds, group, root, downloads)
        if not keep_archives:
            for spec in ds.files_in(groups):
                (downloads / spec.filename).unlink(missing_ok=True)
    return root


def fetch(name: str, data_home=None, *, progress=True, parts=None) -> Path:
    """:func:`ensure` with downloads allowed and a progress bar: what ``retrievalkit datasets fetch`` runs."""
    return ensure(name, data_home, download=True, parts=parts, progress=progress)


def verify(name: str, data_home=None, *, progress=None) -> dict:
    """Check what is on disk: checksums of the files still present, and image counts.

    Returns ``{"dataset", "root", "ok", "files": [...], "counts": {group: {...}}, "problems": [...]}``.
    Archives are hashed only while still in ``<data home>/downloads``; extracted folders are
    counted against the manifest's expected numbers. Survey §2.5.1; notebooks/00_setup_and_data.
    """
    ds = _manifest.get(name)
    root = _present_root(ds, dataset_root(ds.name, data_home), ds.groups) or dataset_root(ds.name, data_home)
    downloads = downloads_dir(data_home)
    report = {"dataset": ds.name, "root": str(root), "files": [], "counts": {}, "problems": []}
    for spec in ds.files:
        for cand in (spec, *spec.alternatives):
            path = downloads / cand.filename if cand.extract else root / cand.target
            entry = {"file": cand.filename, "group": cand.group, "path": str(path)}
            if cand.extract:
                entry["extracted"] = (root / COMPLETE_MARKER.format(cand.filename)).is_file()
            if path.is_file():
                entry.update(checksum_status(path, cand, progress=progress))
                if entry["status"] == "MISMATCH":
                    report["problems"].append(f"{path}: sha256 {entry['sha256']} matches no known checksum")
            else:
                entry["status"] = "absent"
            report["files"].append(entry)
    for group, layout in ds.layouts.items():
        found = _count(root, layout.pattern) if root.is_dir() else 0
        ok = found >= layout.at_least
        report["counts"][group] = {"pattern": layout.pattern, "found": found, "expected": layout.expected, "ok": ok}
        if not ok:
            report["problems"].append(
                f"{root / layout.pattern}: {found} files, expected {layout.expected}"
                f" (run `retrievalkit datasets fetch {ds.name}`)"
            )
    if _extraction_interrupted(root):
        report["problems"].append(f"{root}: an extraction was interrupted; run `retrievalkit datasets fetch {ds.name}`")
    report["ok"] = not report["problems"]
    return report


__all__ = [
    "ChecksumError", "CutShortError", "DamagedArchiveError", "DownloadError", "UnsafeArchiveError", "checksum_status", "dataset_root",
    "download_file", "downloads_dir", "ensure", "fetch", "file_digests", "is_present", "locate",
    "load_gnd_pickle", "safe_extract", "verify",
]
