"""The data hub: make a benchmark's files present under ``<data home>/<name>/``, safely.

Survey §2.5.1 (datasets); taught in notebooks/00_setup_and_data.

For each file of :mod:`~retrievalkit.datasets.manifest` the sources are tried in this order:

1. files already in place (a copied file, or an archive whose ``.complete-<archive>`` marker
   says it was fully extracted, or a hand-placed folder with the expected number of files);
   an OS package folder (Debian's Fashion-MNIST) counts too. Nothing is hashed here.
2. an archive already downloaded into ``<data home>/downloads/``;
3. the mirror ``$RETRIEVALKIT_MIRROR``: a folder (archives are read in place, not copied) or an
   http(s) base URL, holding the official file names flat;
4. the official URLs, only with ``download=True``.

Downloads go to ``<file>.partial``, resume with an HTTP ``Range`` request, are checked
against the manifest's checksums and only then renamed to their final name. Archives are
extracted into a temporary folder beside their target, refusing absolute paths, ``..`` and
links that leave it. Ground-truth pickles are read without allowing any global.
"""
from __future__ import annotations

import fnmatch
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
USER_AGENT = "retrievalkit/0.1 (dataset fetcher; urllib)"
COMPLETE_MARKER = ".complete-{}"
EXTRACTING_MARKER = ".extracting-{}"


class DownloadError(OSError):
    """Every URL of a file failed; the message lists each URL with its error."""


class ChecksumError(ValueError):
    """A file's checksum matches none of the accepted ones."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder (absolute path, ``..``, link)."""


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


def _group_present(ds: DatasetManifest, group: str, root: Path) -> bool:
    """Cheap check: markers and file names only, no hashing.

    A hand-placed folder (no markers) is accepted when its layout has enough files, except
    where an extraction of ours was interrupted: then only completion markers are trusted.
    """
    if all(_file_present(f, root) for f in ds.files_in([group])):
        return True
    layout = ds.layouts.get(group)
    if layout is None or _extraction_interrupted(root):
        return False
    return _count(root, layout.pattern) >= layout.at_least


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
                                     desc=f"checking {path.name}", disable=not progress, leave=False) as bar:
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


def _accepted_checksums(spec: RemoteFile) -> dict:
    """The manifest's rule: official checksums plus known re-packed copies; no check when no
    official checksum exists (see the module docstring of :mod:`.manifest`)."""
    if not spec.has_official_checksum:
        return {"sha256": None, "md5": None}
    return {"sha256": spec.sha256 + spec.copy_sha256 or None, "md5": spec.md5 or None}


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


# --------------------------------------------------------------------------- downloading
def _partial_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".partial")


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
                desc=name, disable=not progress, leave=False)


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


def _fetch_url(url: str, partial: Path, progress, timeout: float) -> None:
    """Download ``url`` into ``partial``, continuing it when it already holds some bytes.

    Raises ``OSError`` when the transfer stops early, leaving the bytes received so far.
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
                return
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
        with partial.open("ab" if resumed else "wb") as out, \
                _progress_bar(total, offset, partial.name[: -len(".partial")], progress) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    received = partial.stat().st_size
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received:,} of {total:,} bytes")


def _finish(partial: Path, dest: Path, sha256, md5) -> Path:
    """Verify ``partial`` and rename it to ``dest``; a bad file is moved aside to ``<name>.bad``."""
    try:
        _check_checksum(partial, sha256, md5, shown_name=dest.name)
    except ChecksumError as err:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(partial, bad)
        raise ChecksumError(
            f"{err}. The file was moved aside to {bad}. Delete it and fetch again; if it keeps "
            f"happening the host (or your RETRIEVALKIT_MIRROR copy) serves a different file: replace "
            f"that copy, or report the new checksum."
        ) from None
    os.replace(partial, dest)
    return dest


def download_file(urls, dest, *, sha256=None, md5=None, progress=None,
                  timeout: float = DEFAULT_TIMEOUT, retries: int = 2) -> Path:
    """Fetch the first working source of ``urls`` to ``dest``, verified, renamed atomically.

    ``urls``: one or several http(s)/ftp URLs, local paths or file:// URLs (a mirror folder),
    tried in order. Bytes go to ``<dest>.partial``; an interrupted HTTP transfer is resumed with
    a ``Range`` request (``retries`` times within this call, and again by the next call), and a
    server that ignores ``Range`` is read from the start. ``sha256`` / ``md5``: one accepted
    checksum or a collection of them. Nothing ever appears under ``dest`` unverified.
    Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    urls = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(dest)
    errors = []
    for url in urls:
        local = _local_source(url)
        try:
            if local is not None:
                _copy_local(local, partial, progress)
            else:
                _fetch_with_retries(str(url), partial, progress, timeout, retries)
        except (OSError, http.client.HTTPException) as err:
            errors.append(f"{url}: {type(err).__name__}: {err}")
            log.info("could not fetch %s (%s)", url, err)
            continue
        return _finish(partial, dest, sha256, md5)
    kept = f"; {partial.stat().st_size:,} bytes kept in {partial} for the next try" if partial.exists() else ""
    raise DownloadError(f"could not fetch {dest.name}{kept}:\n  " + "\n  ".join(errors or ["no URL given"]))


def _fetch_with_retries(url: str, partial: Path, progress, timeout: float, retries: int) -> None:
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
    """What both archive formats offer: a name, a kind, a link target and an opener."""

    def __init__(self, name, kind, link_target=None, open_fn=None):
        self.name, self.kind, self.link_target, self.open = name, kind, link_target, open_fn


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
                yield _Member(info.name, "file", open_fn=lambda info=info: tar.extractfile(info))
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
                yield _Member(info.filename, "file", open_fn=lambda info=info: zf.open(info))


def _archive_members(archive: Path) -> Iterable[_Member]:
    if zipfile.is_zipfile(archive):
        return _zip_members(archive)
    if tarfile.is_tarfile(archive):
        return _tar_members(archive)
    raise ValueError(f"{archive} is neither a zip nor a tar archive")


def _inside(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base + os.sep)


def _write_member(member: _Member, out: Path, staging: Path, archive: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # A link extracted earlier must not let a later file escape through it.
    if not _inside(out, staging):
        raise UnsafeArchiveError(f"{archive.name}: refusing member {member.name!r}: it resolves outside the folder")
    if out.is_symlink():
        out.unlink()
    with member.open() as src, out.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _place_tree(staging: Path, dest: Path) -> None:
    """Move the staged files into ``dest``: one rename when ``dest`` is new, else file by file."""
    if not dest.exists():
        os.replace(staging, dest)
        return
    for folder, dirnames, filenames in os.walk(staging):
        links = [d for d in dirnames if os.path.islink(os.path.join(folder, d))]
        for name in filenames + links:
            path = Path(folder, name)
            target = dest / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    shutil.rmtree(staging)


def _make_staging_folder(dest: Path) -> Path:
    # os.mkdir honours the umask (mkdtemp would make it 0700, and it becomes ``dest`` by rename).
    while True:
        staging = dest.parent / f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.extracting"
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


def safe_extract(archive, dest, *, flatten: bool = False, members_filter: Callable[[str], bool] | None = None,
                 progress=None) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest`` without letting it write elsewhere.

    Absolute member paths, ``..`` components and links pointing outside ``dest`` raise
    :class:`UnsafeArchiveError` naming the member. ``flatten`` drops the members' folders
    (``paris/defense/x.jpg`` → ``dest/x.jpg``; links are then skipped); ``members_filter(name)``
    picks members by their name in the archive. Members are written to a temporary folder beside
    ``dest`` and moved in only when the whole archive has been read, so an interrupted
    extraction leaves nothing half-done in ``dest``. Returns the extracted paths.
    Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    from tqdm.auto import tqdm

    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = _make_staging_folder(dest)
    written: list[PurePosixPath] = []
    seen: set[PurePosixPath] = set()
    try:
        for member in tqdm(_archive_members(archive), desc=f"extracting {archive.name}", unit=" files",
                           disable=not progress, leave=False):
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
                _write_member(member, out, staging, archive)
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
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, out)
            written.append(rel)
            seen.add(rel)
        _place_tree(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
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


def _extract_into(spec: RemoteFile, archive: Path, root: Path, source: str, progress) -> None:
    """Extract one official archive into the dataset root, bracketed by markers."""
    root.mkdir(parents=True, exist_ok=True)
    extracting = root / EXTRACTING_MARKER.format(spec.filename)
    extracting.touch()
    try:
        files = safe_extract(archive, root / spec.target, flatten=spec.flatten,
                             members_filter=_members_filter(spec), progress=progress)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(
            f"could not extract {archive} ({type(err).__name__}: {err}): the archive is damaged. "
            f"Delete (or, in a mirror, replace) it and run `retrievalkit datasets fetch {root.name}` again."
        ) from err
    if not files:
        raise ValueError(f"{archive}: no member matches {spec.keep!r}; is this really {spec.filename}?")
    record = {"archive": spec.filename, "source": source, "files": len(files), "target": spec.target,
              "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    marker = root / COMPLETE_MARKER.format(spec.filename)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, marker)
    extracting.unlink()


def _install(spec: RemoteFile, path: Path, root: Path, source: str, progress) -> None:
    """Put a verified file in place: extract an archive, or copy a plain file to its target."""
    if spec.extract:
        _extract_into(spec, path, root, source, progress)
    elif path != root / spec.target:
        download_file([path], root / spec.target, **_accepted_checksums(spec), progress=progress)


def _mirror_url(mirror: str, filename: str) -> str:
    return mirror.rstrip("/") + "/" + quote(filename)


def _from_mirror(spec: RemoteFile, mirror: str, root: Path, downloads: Path, progress, tried: list) -> bool:
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
        _install(spec, source, root, f"mirror {source}", progress)
        return True
    url = _mirror_url(mirror, spec.filename)
    dest = downloads / spec.filename if spec.extract else root / spec.target
    try:
        path = download_file([url], dest, **checks, progress=progress)
    except DownloadError as err:
        tried.append(f"mirror {url}: {str(err).splitlines()[-1].strip()}")
        return False
    _install(spec, path, root, f"mirror {url}", progress)
    return True


def _from_official(spec: RemoteFile, root: Path, downloads: Path, progress, tried: list) -> bool:
    if not spec.urls:
        return False
    dest = downloads / spec.filename if spec.extract else root / spec.target
    try:
        path = download_file(spec.urls, dest, **_accepted_checksums(spec), progress=progress)
    except DownloadError as err:
        tried.append(str(err))
        return False
    _install(spec, path, root, spec.urls[0], progress)
    return True


def _obtain(ds: DatasetManifest, spec: RemoteFile, root: Path, downloads: Path, *, download: bool,
            progress) -> None:
    """Bring one manifest file (or one of its alternatives) into place, or raise."""
    candidates = (spec, *spec.alternatives)
    for cand in candidates:
        cached = downloads / cand.filename
        if cand.extract and cached.is_file():  # verified when it was downloaded
            _install(cand, cached, root, f"cached {cached}", progress)
            return
    tried: list[str] = []
    mirror = config.mirror()
    if mirror:
        for cand in candidates:
            if _from_mirror(cand, mirror, root, downloads, progress, tried):
                return
    else:
        tried.append("no RETRIEVALKIT_MIRROR set")
    if download:
        for cand in candidates:
            if _from_official(cand, root, downloads, progress, tried):
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


def ensure(name: str, data_home=None, *, download: bool = True, parts=None, progress=None,
           keep_archives: bool = True) -> Path:
    """Make dataset ``name``'s files present and return the folder holding them.

    ``parts`` restricts to some file groups of the manifest, e.g. ``("gnd",)`` for only the
    ground truth. Sources, in order: files already in place (returned at once, nothing hashed;
    an OS package folder such as Debian's Fashion-MNIST counts), archives already in
    ``<data home>/downloads``, ``$RETRIEVALKIT_MIRROR``, then the official URLs when ``download``
    is true. Raises :class:`DatasetNotFoundError` naming the missing path and the fix.
    ``keep_archives=False`` deletes downloaded archives once extracted (``verify`` can then only
    count files). Survey §2.5.1; taught in notebooks/00_setup_and_data.
    """
    ds = _manifest.get(name)
    root = dataset_root(ds.name, data_home)
    groups = _select_groups(ds, parts)
    present = _present_root(ds, root, groups)
    if present is not None:
        return present
    downloads = downloads_dir(data_home)
    for group in groups:
        if _group_present(ds, group, root):
            continue
        for spec in ds.files_in([group]):
            if not _file_present(spec, root):
                _obtain(ds, spec, root, downloads, download=download, progress=progress)
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
    "ChecksumError", "DownloadError", "UnsafeArchiveError", "checksum_status", "dataset_root",
    "download_file", "downloads_dir", "ensure", "fetch", "file_digests", "is_present", "locate",
    "load_gnd_pickle", "safe_extract", "verify",
]
