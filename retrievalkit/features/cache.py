"""On-disk feature cache: one folder per extraction, keyed by a hash of everything that changes it.

Survey §2.3.1 (every pooling, whitening and dimension variant of the later sections is derived
from the same extracted features); taught in notebooks/02_feature_layers.

Layout under ``config.cache_dir()`` (``$RETRIEVALKIT_CACHE`` or ``<data home>/cache``)::

    features/
      coil100-db__efficientnet_lite0__3f2a9c0e51b7d4a8e6f1/   <- <dataset>__<backbone>__<key>
        features.json             sidecar: full config, arrays, shapes, skipped files, timing, "complete": true
        images.txt                the image paths, one per line, in row order
        head__mac.npy             N×C float32 pooled rows, raw (not L2-normalised)
        head__gem.npy
        maps__head.npy            optional N×C×h×w float16 conv maps (keep_maps=True)
      coil100-db__…__<key>.tmp-<pid>-<random>/    an extraction in progress (never read)

An extraction writes into the ``.tmp-`` folder and publishes it with one ``os.replace`` once
the sidecar (with ``complete: true``) is written, so an interrupted run leaves nothing a later
run trusts. Temporary folders of processes that no longer exist are removed on the next run.

Integrity: the sidecar records each array's byte size and CRC-32. :func:`lookup` checks the
``.npy`` header against the recorded shape and dtype, the file size against the header, and the
CRC-32 of the bytes (~10 ms for a 7,200×1,280 float32 array, 35 MiB, on 2 laptop cores), so a
truncated or overwritten array is recomputed, with a warning naming it, instead of being served.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from .. import config as rk_config

log = logging.getLogger(__name__)
EXTRACTOR_VERSION = 1  # bump whenever a change in the extractor changes the numbers it writes
SUBDIR = "features"
SIDECAR = "features.json"
IMAGE_LIST = "images.txt"
KEY_LENGTH = 20
_TMP = ".tmp-"
_OLD = ".old-"
_STALE_WITHOUT_PID_S = 24 * 3600  # where liveness cannot be asked (Windows), trust age instead
_CHUNK = 1 << 22


class CorruptCacheError(ValueError):
    """A cached array that cannot be read back as recorded (truncated, overwritten, not a .npy)."""


# --------------------------------------------------------------------------- keys
def canonical(config: dict) -> dict:
    """``config`` as JSON would give it back (tuples → lists, keys → str), for stable hashing and comparison."""
    return json.loads(json.dumps(config, sort_keys=True))


def cache_key(config: dict) -> str:
    """Hex digest of the canonical JSON of ``config``."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("_") or "x"


def folder_name(config: dict) -> str:
    """``<dataset>__<backbone>__<key>``: readable prefix, unique suffix."""
    return f"{_safe(config.get('dataset', 'images'))}__{_safe(config.get('backbone', 'model'))}__{cache_key(config)}"


def array_file(layer: str, pooling: str | None) -> str:
    return f"{_safe(layer)}__{_safe(pooling or 'vector')}.npy"


def maps_file(layer: str) -> str:
    return f"maps__{_safe(layer)}.npy"


def features_root(cache=None) -> Path:
    return rk_config.cache_dir(cache) / SUBDIR


# --------------------------------------------------------------------------- rows written in place
class RowWriter:
    """An ``N×…`` ``.npy`` file whose rows are written as batches arrive.

    The file is created at full size (sparse, so unwritten rows read as zeros) and rows are
    written with plain seeks, not through a memory map: the process keeps no pages of the
    growing file, so its memory does not grow with N. Read it back with ``np.load(mmap_mode="r")``.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype=np.float32):
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self._offset = header.offset
        del header
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._file = open(self.path, "r+b")

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"rows {rows.shape} at {start} do not fit {self.path.name} {self.shape}")
        self._file.seek(self._offset + start * self._row_bytes)
        self._file.write(rows.data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# --------------------------------------------------------------------------- folders
def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(path: Path) -> bool:
    match = re.search(rf"(?:{re.escape(_TMP)}|{re.escape(_OLD)})(\d+)-", path.name)
    if match is None:
        return False
    if os.name != "posix":
        return time.time() - path.stat().st_mtime > _STALE_WITHOUT_PID_S
    return not _pid_alive(int(match.group(1)))


def remove_stale(root: Path, name: str | None = None) -> list[Path]:
    """Delete temporary folders left by processes that are gone (all of them, or those of ``name``)."""
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if (_TMP in path.name or _OLD in path.name) and (name is None or path.name.startswith(name + ".")):
            if path.is_dir() and _is_stale(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def read_sidecar(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SIDECAR).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- integrity
def crc32_of(path: Path) -> str:
    """CRC-32 of a file's bytes as 8 hex digits (zlib's, ~3 GB/s: cheap next to reading the rows)."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _entries(sidecar: dict) -> list[dict]:
    return [*sidecar.get("arrays", []), *sidecar.get("maps", [])]


def add_checksums(folder: Path, sidecar: dict) -> dict:
    """The sidecar with ``bytes`` and ``crc32`` recorded for every array file of ``folder``."""
    out = {**sidecar}
    for kind in ("arrays", "maps"):
        out[kind] = [{**e, "bytes": (folder / e["file"]).stat().st_size, "crc32": crc32_of(folder / e["file"])}
                     for e in sidecar.get(kind, [])]
    return out


def damage(folder: Path, entry: dict) -> str | None:
    """Why ``entry``'s file in ``folder`` cannot be trusted, or None when it reads back as recorded.

    Checks, cheapest first: the file exists; its ``.npy`` header gives the sidecar's shape and dtype;
    its size is header + rows (a truncated copy fails here); the recorded size and CRC-32 match
    (a same-size overwrite fails here). Entries written before checksums existed skip the last check.
    """
    path = folder / entry["file"]
    if not path.is_file():
        return "missing"
    try:
        with open(path, "rb") as fh:
            read_header = np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(fh) == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError) as err:
        return f"not a readable .npy file ({err})"
    if list(shape) != list(entry.get("shape", shape)) or dtype.name != entry.get("dtype", dtype.name):
        return f"holds {dtype.name}{list(shape)}, the sidecar says {entry.get('dtype')}{entry.get('shape')}"
    size, expected = path.stat().st_size, offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        return f"{'truncated' if size < expected else 'too long'}: {size:,} bytes, {expected:,} expected"
    if "crc32" in entry and (size != entry.get("bytes", size) or crc32_of(path) != entry["crc32"]):
        return f"checksum mismatch (CRC-32 {crc32_of(path)}, recorded {entry['crc32']}): its bytes were changed"
    return None


def _record_checksums(folder: Path, sidecar: dict) -> dict:
    """Add checksums to an entry published before they existed (its sizes were just checked)."""
    sidecar = add_checksums(folder, sidecar)
    tmp = folder / f"{SIDECAR}{_TMP}{os.getpid()}"
    try:
        tmp.write_text(json.dumps(sidecar, indent=1, sort_keys=True))
        os.replace(tmp, folder / SIDECAR)
    except OSError:  # a read-only cache still serves; it is checked by size only
        tmp.unlink(missing_ok=True)
    return sidecar


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """``np.load`` of a cached array; a damaged file raises :class:`CorruptCacheError` naming it and the fix."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CorruptCacheError(
            f"feature cache file {path} is damaged ({err}): delete the folder {path.parent} "
            "(or call extract(..., refresh=True)) to recompute it") from err


def lookup(root: Path, config: dict, warn: bool = True) -> tuple[Path, dict] | None:
    """The published folder of ``config`` and its sidecar, when complete, made for exactly this
    config, and every array in it reads back as recorded (see :func:`damage`); a damaged array is
    logged (``warn``) and the entry treated as absent, so the caller recomputes it."""
    folder = root / folder_name(config)
    sidecar = read_sidecar(folder) if folder.is_dir() else None
    if not sidecar or sidecar.get("complete") is not True or sidecar.get("config") != canonical(config):
        return None
    for entry in _entries(sidecar):
        reason = damage(folder, entry)
        if reason is not None:
            if warn:
                log.warning("feature cache file %s is %s; recomputing this extraction", folder / entry["file"], reason)
            return None
    if not all("crc32" in e for e in _entries(sidecar)):
        sidecar = _record_checksums(folder, sidecar)
    return folder, sidecar


def begin(root: Path, config: dict) -> Path:
    """A fresh private folder to extract into (stale ones of the same key are removed first)."""
    root.mkdir(parents=True, exist_ok=True)
    name = folder_name(config)
    remove_stale(root, name)
    tmp = root / f"{name}{_TMP}{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    return tmp


def write_image_list(folder: Path, paths: Iterable[str]) -> None:
    (folder / IMAGE_LIST).write_text("".join(f"{p}\n" for p in paths))


def commit(tmp: Path, config: dict, sidecar: dict, replace: bool = False) -> Path:
    """Write the sidecar with ``complete: true`` and publish ``tmp`` under its final name.

    When another process published the same key first, its folder is kept and ``tmp`` is
    dropped, unless ``replace`` (a forced refresh) or the existing folder is not a valid entry.
    """
    sidecar = {**add_checksums(tmp, sidecar), "config": canonical(config), "complete": True}
    (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1, sort_keys=True))
    final = tmp.parent / folder_name(config)
    if final.exists():
        if not replace and lookup(tmp.parent, config, warn=False) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        old = final.with_name(f"{final.name}{_OLD}{os.getpid()}-{secrets.token_hex(3)}")
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process published the same key between the check above and the rename.
        if lookup(tmp.parent, config, warn=False) is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def abort(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def list_cached(cache=None) -> list[dict]:
    """One summary dict per published extraction (for notebooks: what is cached, how big, how long it took)."""
    root = features_root(cache)
    rows = []
    for folder in sorted(root.glob("*__*__*")) if root.is_dir() else []:
        sidecar = read_sidecar(folder)
        if not sidecar or _TMP in folder.name or _OLD in folder.name:
            continue
        cfg = sidecar["config"]
        rows.append({
            "folder": str(folder), "dataset": cfg.get("dataset"), "backbone": cfg.get("backbone"),
            "layers": ",".join(cfg.get("layers", [])), "images": sidecar.get("n_images"),
            "seconds_per_image": sidecar.get("seconds_per_image"),
            "megabytes": sum(f.stat().st_size for f in folder.iterdir()) / 2**20,
        })
    return rows


__all__ = ["EXTRACTOR_VERSION", "RowWriter", "CorruptCacheError", "cache_key", "canonical", "folder_name",
           "features_root", "lookup", "begin", "commit", "abort", "remove_stale", "list_cached", "read_sidecar",
           "crc32_of", "damage", "load_array"]
