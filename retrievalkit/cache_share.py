"""Share a run's cache with a lab: ``pack`` writes one archive of its features and trained
artefacts, ``unpack`` installs the entries that check out into another cache.

Survey §2.5 (the evaluation runs everyone repeats): an instructor runs ``retrievalkit reproduce``
once, packs the cache, and thirty students start from the same features and trained weights
instead of re-extracting and re-training on laptops. Taught in notebooks/00_setup_and_data.

The archive is an uncompressed tar (features are float32, compression gains little) holding::

    features/<dataset>__<backbone>__<key>/…      feature-cache entries (retrievalkit.features.cache)
    artifacts/<kind>/<key>/…                     trained artefacts (retrievalkit.artifacts)
    MANIFEST.json                                every member's sha256 and size, by entry

Only entries that pass their own checks are packed. ``unpack`` extracts with the data hub's safe
extraction (no absolute paths, no ``..``, no links, expansion limits), then installs an entry
only when each of its files matches the manifest's sha256 and size and the entry passes its
cache's own checks (complete sidecar, key matching its folder name, sizes and CRC-32). Failing
entries are refused and listed, never used; a good entry already in the cache is never replaced.
``unpack()`` without a path reads ``retrievalkit-cache.tar`` from ``$RETRIEVALKIT_MIRROR`` (the lab's folder or URL).
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urlparse
from urllib.request import url2pathname

from . import __version__, artifacts
from . import config as rk_config
from .datasets.download import UnsafeArchiveError, download_file, safe_extract
from .features import cache as fcache

ARCHIVE_NAME = "retrievalkit-cache.tar"
MANIFEST = "MANIFEST.json"
FORMAT, FORMAT_VERSION = "retrievalkit-cache", 1
_ENTRY = re.compile(r"features/[^/]+|artifacts/[^/]+/[^/]+")
_CHUNK = 1 << 20


@dataclass
class PackResult:
    """What :func:`pack` wrote: the archive, the entries in it, and those left out with the reason."""
    path: Path
    entries: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0


@dataclass
class UnpackResult:
    """What :func:`unpack` did with each entry of the archive."""
    archive: Path
    installed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # a good copy was already in the cache
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused


# --------------------------------------------------------------------------- entries of a cache
def _is_temporary(folder: Path) -> bool:
    return fcache._TMP in folder.name or fcache._OLD in folder.name


def cache_entries(cache=None) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every published entry: ``features/<folder>`` and ``artifacts/<kind>/<key>``."""
    root = rk_config.cache_dir(cache)
    folders = [*sorted((root / fcache.SUBDIR).glob("*")), *sorted((root / artifacts.SUBDIR).glob("*/*"))]
    return [(f.relative_to(root).as_posix(), f) for f in folders
            if f.is_dir() and not f.is_symlink() and not _is_temporary(f)]


def _feature_damage(folder: Path) -> str | None:
    sidecar = fcache.read_sidecar(folder)
    if not sidecar or sidecar.get("complete") is not True or not isinstance(sidecar.get("config"), dict):
        return f"its sidecar {fcache.SIDECAR} is missing, unreadable or not complete"
    if fcache.folder_name(sidecar["config"]) != folder.name:
        return "its recorded config does not match its folder name"
    for entry in [*sidecar.get("arrays", []), *sidecar.get("maps", [])]:
        reason = fcache.damage(folder, entry)
        if reason is not None:
            return f"{entry.get('file')} is {reason}"
    return None


def entry_damage(name: str, folder: Path) -> str | None:
    """Why the cache entry ``name`` (in ``folder``) cannot be trusted, or None."""
    if any(not p.is_file() or p.is_symlink() for p in Path(folder).iterdir()):
        return "it holds something other than plain files"
    return _feature_damage(folder) if name.startswith(fcache.SUBDIR + "/") else artifacts.damage(folder)


def summary(cache=None) -> list[dict]:
    """One row per entry (for ``retrievalkit cache list``): name, size in MiB, and ``ok`` or what is wrong."""
    return [{"entry": name, "megabytes": sum(p.stat().st_size for p in folder.iterdir()) / 2**20,
             "status": entry_damage(name, folder) or "ok"} for name, folder in cache_entries(cache)]


# --------------------------------------------------------------------------- pack
class _HashingReader:
    """A file object that hashes what ``tarfile`` reads from it, so the manifest describes the bytes written."""

    def __init__(self, fh):
        self.fh, self.sha256 = fh, hashlib.sha256()

    def read(self, n=-1):
        data = self.fh.read(n)
        self.sha256.update(data)
        return data


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, int(mtime), 0o644, 0, 0
    return info


def pack(path, cache=None, *, include: Iterable[str] | None = None) -> PackResult:
    """Write the cache's good entries into one tar archive at ``path`` (a folder gets ``retrievalkit-cache.tar``).

    ``include``: shell patterns on entry names (``"features/coil100*"``, ``"artifacts/itq/*"``); all by
    default. Damaged entries are left out and listed in ``skipped``. The archive appears under its
    name only once complete. Returns a :class:`PackResult`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ARCHIVE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    patterns = list(include) if include is not None else ["*"]
    result = PackResult(path)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "retrievalkit": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "entries": []}
    tmp = path.with_name(f"{path.name}{fcache._TMP}{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name, folder in cache_entries(cache):
                if not any(fnmatch.fnmatch(name, p) for p in patterns):
                    continue
                reason = entry_damage(name, folder)
                if reason is not None:
                    result.skipped.append((name, reason))
                    continue
                files = []
                for file in sorted(folder.iterdir()):
                    with open(file, "rb") as fh:
                        st = os.fstat(fh.fileno())
                        reader = _HashingReader(fh)
                        tar.addfile(_tar_info(f"{name}/{file.name}", st.st_size, st.st_mtime), reader)
                    files.append({"file": file.name, "bytes": st.st_size, "sha256": reader.sha256.hexdigest()})
                    result.bytes += st.st_size
                manifest["entries"].append({"name": name, "files": files})
                result.entries.append(name)
            text = json.dumps(manifest, indent=1).encode()
            tar.addfile(_tar_info(MANIFEST, len(text), time.time()), io.BytesIO(text))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


# --------------------------------------------------------------------------- unpack
def _mirror_archive(downloads: Path) -> Path:
    mirror = rk_config.mirror()
    if mirror is None:
        raise FileNotFoundError(f"no archive given and RETRIEVALKIT_MIRROR is not set: run `retrievalkit cache unpack "
                                f"PATH`, or set RETRIEVALKIT_MIRROR to the lab folder or URL holding {ARCHIVE_NAME}")
    parsed = urlparse(mirror)
    if parsed.scheme in ("http", "https", "ftp"):
        return download_file([mirror.rstrip("/") + "/" + quote(ARCHIVE_NAME)], downloads / ARCHIVE_NAME)
    folder = Path(url2pathname(unquote(parsed.path))) if parsed.scheme == "file" else Path(mirror)
    return folder / ARCHIVE_NAME


def _find_archive(path, cache) -> Path:
    archive = _mirror_archive(rk_config.cache_dir(cache) / "downloads") if path is None else Path(path)
    if archive.is_dir():
        archive = archive / ARCHIVE_NAME
    if not archive.is_file():
        raise FileNotFoundError(f"cache archive {archive} not found: pass the file `retrievalkit cache pack` wrote "
                                f"(or a folder holding {ARCHIVE_NAME})")
    return archive


def _read_manifest(staging: Path, archive: Path) -> list[dict]:
    try:
        manifest = json.loads((staging / MANIFEST).read_text())
        entries = manifest["entries"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{archive}: no readable {MANIFEST} ({type(err).__name__}: {err}): this is not an archive "
                         "written by `retrievalkit cache pack`, or it is damaged; ask for a fresh copy") from None
    if manifest.get("format") != FORMAT or not isinstance(entries, list):
        raise ValueError(f"{archive}: {MANIFEST} is not a retrievalkit cache manifest; ask for a fresh copy")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{archive} was written by a newer retrievalkit ({manifest.get('retrievalkit')}): "
                         "upgrade retrievalkit to unpack it")
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_staged(name: str, folder: Path, files: list[dict]) -> str | None:
    """Why the extracted entry does not match the manifest (or fails its own checks), or None."""
    if not folder.is_dir():
        return "listed in the manifest but absent from the archive"
    listed = {f.get("file"): f for f in files if isinstance(f, dict)}
    present = {p.name for p in folder.iterdir()}
    if present - set(listed):
        return f"holds files the manifest does not list: {', '.join(sorted(present - set(listed)))}"
    for file, record in listed.items():
        path = folder / str(file)
        if file not in present:
            return f"{file} is missing"
        if path.stat().st_size != record.get("bytes"):
            return f"{file} has {path.stat().st_size:,} bytes, the manifest says {record.get('bytes')}"
        if _sha256(path) != record.get("sha256"):
            return f"{file} fails its sha256 check: it was changed or damaged"
    return entry_damage(name, folder)


def _refuse_links(staging: Path, archive: Path) -> None:
    for parent, dirnames, filenames in os.walk(staging):
        for item in dirnames + filenames:
            if os.path.islink(os.path.join(parent, item)):
                raise UnsafeArchiveError(f"{archive}: holds a link {Path(parent, item).relative_to(staging)}, which a "
                                         "retrievalkit cache archive never does; nothing was installed")


def unpack(path=None, cache=None, *, progress=None, max_bytes: int | None = None) -> UnpackResult:
    """Install the entries of a cache archive (``path``, or ``retrievalkit-cache.tar`` in ``$RETRIEVALKIT_MIRROR``).

    Each entry is checked against the archive's manifest and its own sidecar before it is moved
    into the cache in one rename; failing entries are listed in ``refused`` and never installed, a
    good entry already in the cache is kept (``kept``). An unsafe archive (absolute paths, ``..``,
    links, more than ``max_bytes`` expanded) raises :class:`UnsafeArchiveError` and installs nothing.
    """
    archive = _find_archive(path, cache)
    root = rk_config.cache_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    fcache.remove_stale(root)  # staging folders of unpacks that were killed
    staging = root / f"unpack{fcache._TMP}{os.getpid()}-{secrets.token_hex(3)}"
    result = UnpackResult(archive)
    try:
        try:
            safe_extract(archive, staging, progress=progress, max_bytes=max_bytes)
        except UnsafeArchiveError as err:
            raise UnsafeArchiveError(f"{err}; nothing was installed from {archive}") from None
        except tarfile.TarError as err:
            raise ValueError(f"{archive} is damaged ({err}): ask for a fresh copy") from None
        _refuse_links(staging, archive)
        listed = set()
        for entry in _read_manifest(staging, archive):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not _ENTRY.fullmatch(name) or ".." in name.split("/") \
                    or _is_temporary(Path(name)):
                result.refused.append((str(name), "not a cache entry name"))
                continue
            listed.add(name)
            reason = _check_staged(name, staging / name, entry.get("files") or [])
            if reason is not None:
                result.refused.append((name, reason))
                continue
            target = root / name
            check = lambda folder, name=name: entry_damage(name, folder)  # noqa: E731
            if target.is_dir() and check(target) is None:
                result.kept.append(name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            artifacts.publish_folder(staging / name, target, check=check)
            result.installed.append(name)
        for name, _ in cache_entries(staging):
            if name not in listed:
                result.refused.append((name, f"not listed in {MANIFEST}"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


__all__ = ["pack", "unpack", "summary", "cache_entries", "entry_damage", "PackResult", "UnpackResult",
           "ARCHIVE_NAME", "MANIFEST"]
