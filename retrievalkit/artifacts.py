"""On-disk cache of trained artefacts (codebooks, GMMs, PCA/whitening, ITQ, hash heads, attention
heads, fine-tuned weights, re-ranking selections), keyed by everything that changes them.

Survey §2.3–2.4 (every learned stage of the pipeline is fitted on the learning split once and then
reused by the later sections); taught in notebooks/00_setup_and_data. The feature cache
(:mod:`retrievalkit.features.cache`) stores what the network computes; this one stores what is
learned from those features, so a notebook reads what ``retrievalkit reproduce`` trained::

    wh = rk.artifacts.cached("whitening", {"data": rk.artifacts.fingerprint(X_learn),
                                           "settings": {"dim": 256}, "seed": 0},
                             lambda: PCAWhitening(dim=256).fit(X_learn), version=1)

The key is the hash of the canonical JSON of ``{kind, version, retrievalkit.__version__, key
parts}``: ``version`` is the caller's per-kind code version (bump it when the code that computes
the artefact changes its numbers), ``key_parts`` must hold ``"data"`` (a feature-cache key or
:func:`fingerprint` of the input rows) and whatever else changes the result (settings, seed).
Any mismatch is a different folder, so a changed input is recomputed, never served stale.

Layout under ``config.cache_dir()``::

    artifacts/<kind>/<key>/
        artifact.json     sidecar: kind, the full key, format, files with bytes and CRC-32, "complete": true
        arrays.npz        numpy arrays (formats "array", "arrays", "record", "estimator")
        state.pt          a torch state dict (format "state_dict"; loaded with weights_only=True)
        value.json        small JSON data (format "json"; "record": its JSON entries and layout)
        estimator.json    a fitted retrievalkit estimator: class, constructor params, fitted scalars
    artifacts/<kind>/<key>.tmp-<pid>-<random>/      being written (never read)

Nothing is pickled: a lab shares this cache, and loading an entry must not run code from it. A
fitted estimator is rebuilt by calling its retrievalkit class with the stored JSON params and
setting its fitted arrays. Entries are written into a ``.tmp-`` folder and published with one
``os.replace``, like the feature cache; when two processes compute the same artefact, both
succeed and the first to publish wins. A truncated, overwritten or stale entry is refused with a
warning naming its folder, and recomputed.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from . import __version__
from . import config as rk_config
from .features import cache as fcache

log = logging.getLogger(__name__)
T = TypeVar("T")

SUBDIR = "artifacts"
SIDECAR = "artifact.json"
ARRAYS_FILE, STATE_FILE, JSON_FILE, ESTIMATOR_FILE = "arrays.npz", "state.pt", "value.json", "estimator.json"
# Temporary and old folders use the feature cache's markers, so its remove_stale() cleans ours too.
_TMP, _OLD = fcache._TMP, fcache._OLD
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FINGERPRINT_CHUNK = 1 << 24  # bytes hashed per step: bounded memory for memory-mapped features


class CorruptArtifactError(ValueError):
    """A cached artefact that cannot be read back as recorded."""


# --------------------------------------------------------------------------- keys
def fingerprint(*arrays) -> str:
    """sha256 (32 hex digits) of arrays' dtypes, shapes and bytes, in order: the ``"data"`` key part
    for learning rows (and their labels). Reads a memory-mapped array in 16 MiB steps (35 MiB in
    ~40 ms on one core)."""
    digest = hashlib.sha256()
    for array in arrays:
        if hasattr(array, "detach"):  # a torch tensor
            array = array.detach().cpu().numpy()
        array = np.asarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        flat = array.reshape(-1) if array.flags.c_contiguous else array.ravel()
        step = max(1, _FINGERPRINT_CHUNK // max(1, array.itemsize))
        for start in range(0, flat.size, step):
            digest.update(np.ascontiguousarray(flat[start:start + step]).data)
    return digest.hexdigest()[:32]


def settings(estimator, ignore=("progress",)) -> dict:
    """A retrievalkit estimator's class and constructor arguments as JSON: the ``settings`` key part of
    a fitted copy of it (``progress`` left out: it changes what is printed, not what is learned)."""
    cls = type(estimator)
    name = f"{cls.__module__}:{cls.__qualname__}"
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.name in ignore or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(estimator, p.name):
            raise TypeError(f"{name} keeps no attribute {p.name!r} for its constructor argument, so it cannot be "
                            "rebuilt without pickle: cache its arrays or its state_dict() instead")
        params[p.name] = _json_value(getattr(estimator, p.name), f"{name}.{p.name}")
    return {"class": name, "params": params}


def full_key(kind: str, key_parts: dict, version: int) -> dict:
    """What the key hashes: the kind, both code versions and the caller's parts, as JSON gives them back."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ValueError(f"artifact kind {kind!r} must be a plain name (letters, digits, _ . -), e.g. 'whitening'")
    if not isinstance(key_parts, Mapping) or "data" not in key_parts:
        raise ValueError(f"artifacts ({kind}): key_parts must be a dict with a 'data' entry (a feature-cache key "
                         "or artifacts.fingerprint(X)); without it a changed input would be served stale")
    try:
        return fcache.canonical({"kind": kind, "version": int(version), "retrievalkit": __version__,
                                 "parts": dict(key_parts)})
    except TypeError as err:
        raise TypeError(f"artifacts ({kind}): key_parts must hold JSON values only ({err}); pass arrays "
                        "through artifacts.fingerprint() and numpy numbers through int()/float()") from None


def artifacts_root(cache=None) -> Path:
    return rk_config.cache_dir(cache) / SUBDIR


def entry_folder(kind: str, key_parts: dict, *, version: int, cache=None) -> Path:
    """Where the entry of these inputs lives (whether or not it exists)."""
    return artifacts_root(cache) / kind / fcache.cache_key(full_key(kind, key_parts, version))


# --------------------------------------------------------------------------- values <-> files
def _json_value(value, where: str):
    """``value`` as JSON data (numpy scalars become Python numbers); TypeError naming ``where`` otherwise."""
    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"{where} holds a {type(obj).__name__}, which is not JSON data")
    return json.loads(json.dumps(value, default=default))


def _is_torch_tensor(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_state_dict(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(_is_torch_tensor(v) for v in value.values())


def _is_estimator(value) -> bool:
    module = type(value).__module__
    return module == "retrievalkit" or module.startswith("retrievalkit.")


def value_format(value) -> str:
    """How :func:`save` stores ``value``: "array", "arrays", "state_dict", "record" (a dict of arrays,
    state dicts and JSON data, e.g. trained weights with their history), "estimator" or "json"."""
    if isinstance(value, np.ndarray):
        return "array"
    if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
        if all(isinstance(v, np.ndarray) for v in value.values()):
            return "arrays"
        if all(_is_torch_tensor(v) for v in value.values()):
            return "state_dict"
        if any(isinstance(v, np.ndarray) or _is_state_dict(v) for v in value.values()):
            return "record"
    if _is_estimator(value):
        return "estimator"
    try:
        _json_value(value, "the value")
    except (TypeError, ValueError):
        raise TypeError(f"artifacts cannot store a {type(value).__module__}.{type(value).__name__}: return a numpy "
                        "array, a dict of arrays, a torch state_dict(), JSON data or a fitted retrievalkit "
                        "estimator from compute()") from None
    return "json"


def _estimator_state(obj, arrays: dict, prefix: str) -> dict:
    """JSON description of a fitted retrievalkit object; its arrays go into ``arrays`` under ``prefix``."""
    node = settings(obj, ignore=())
    name = node["class"]
    node.update({"fitted": {}, "arrays": {}, "tensors": {}, "children": {}})
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):  # an nn.Module: its weights
        node["state"], node["training"] = {}, bool(obj.training)
        for key, tensor in obj.state_dict().items():
            arrays[prefix + key] = tensor.detach().cpu().numpy()
            node["state"][key] = prefix + key
        return node
    for attr, value in vars(obj).items():
        if attr.startswith("_") or not attr.endswith("_"):  # fitted attributes end in "_", like scikit-learn's
            continue
        if isinstance(value, np.ndarray):
            arrays[prefix + attr] = value
            node["arrays"][attr] = prefix + attr
        elif _is_torch_tensor(value):
            arrays[prefix + attr] = value.detach().cpu().numpy()
            node["tensors"][attr] = prefix + attr
        elif _is_estimator(value):
            node["children"][attr] = _estimator_state(value, arrays, f"{prefix}{attr}.")
        else:
            node["fitted"][attr] = _json_value(value, f"{name}.{attr}")
    return node


def _rebuild(node: dict, arrays: Mapping[str, np.ndarray]):
    """The object :func:`_estimator_state` described; only retrievalkit classes are ever called."""
    module, _, qualname = node["class"].partition(":")
    if module != "retrievalkit" and not module.startswith("retrievalkit."):
        raise CorruptArtifactError(f"refusing to build {node['class']!r}: not a retrievalkit class")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not isinstance(cls, type):
        raise CorruptArtifactError(f"{node['class']!r} is not a class")
    obj = cls(**node["params"])
    if "state" in node:
        import torch

        obj.load_state_dict({k: torch.from_numpy(np.array(arrays[v])) for k, v in node["state"].items()}, strict=True)
        obj.train(node.get("training", False))
        return obj
    for attr, key in node["arrays"].items():
        setattr(obj, attr, arrays[key])
    if node["tensors"]:
        import torch

        for attr, key in node["tensors"].items():
            setattr(obj, attr, torch.from_numpy(np.array(arrays[key])))
    for attr, value in node["fitted"].items():
        setattr(obj, attr, value)
    for attr, child in node["children"].items():
        setattr(obj, attr, _rebuild(child, arrays))
    return obj


def _write_value(folder: Path, value, fmt: str) -> None:
    if fmt == "array":
        np.savez(folder / ARRAYS_FILE, array=value)
    elif fmt == "arrays":
        np.savez(folder / ARRAYS_FILE, **value)
    elif fmt == "state_dict":
        import torch

        torch.save(dict(value), folder / STATE_FILE)
    elif fmt == "record":  # arrays under their name, state dicts under "name/parameter", the rest as JSON
        arrays, layout = {}, {"arrays": [], "state_dicts": {}, "json": {}}
        for name, v in value.items():
            if isinstance(v, np.ndarray):
                arrays[name] = v
                layout["arrays"].append(name)
            elif _is_state_dict(v):
                layout["state_dicts"][name] = list(v)
                arrays.update({f"{name}/{k}": t.detach().cpu().numpy() for k, t in v.items()})
            else:
                layout["json"][name] = _json_value(v, f"the value's {name!r}")
        np.savez(folder / ARRAYS_FILE, **arrays)
        (folder / JSON_FILE).write_text(json.dumps(layout))
    elif fmt == "estimator":
        arrays: dict = {}
        state = _estimator_state(value, arrays, "")
        np.savez(folder / ARRAYS_FILE, **arrays)
        (folder / ESTIMATOR_FILE).write_text(json.dumps(state, indent=1))
    else:
        (folder / JSON_FILE).write_text(json.dumps(_json_value(value, "the value")))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _read_value(folder: Path, fmt: str):
    if fmt == "array":
        return _read_arrays(folder / ARRAYS_FILE)["array"]
    if fmt == "arrays":
        return _read_arrays(folder / ARRAYS_FILE)
    if fmt == "state_dict":
        import torch

        return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if fmt == "estimator":
        return _rebuild(json.loads((folder / ESTIMATOR_FILE).read_text()), _read_arrays(folder / ARRAYS_FILE))
    if fmt == "json":
        return json.loads((folder / JSON_FILE).read_text())
    if fmt == "record":
        import torch

        layout, arrays = json.loads((folder / JSON_FILE).read_text()), _read_arrays(folder / ARRAYS_FILE)
        return {**{name: arrays[name] for name in layout["arrays"]}, **layout["json"],
                **{name: {k: torch.from_numpy(arrays[f"{name}/{k}"]) for k in keys}
                   for name, keys in layout["state_dicts"].items()}}
    raise CorruptArtifactError(f"unknown format {fmt!r}")


# --------------------------------------------------------------------------- entries
def read_sidecar(folder: Path) -> dict | None:
    try:
        sidecar = json.loads((Path(folder) / SIDECAR).read_text())
    except (OSError, ValueError):
        return None
    return sidecar if isinstance(sidecar, dict) else None


def damage(folder: Path) -> str | None:
    """Why the entry in ``folder`` cannot be trusted, or None: the sidecar must be complete, its key
    must hash to the folder's name, and every file must have the recorded size and CRC-32."""
    folder = Path(folder)
    sidecar = read_sidecar(folder)
    if sidecar is None:
        return f"its sidecar {SIDECAR} is missing or unreadable"
    if sidecar.get("complete") is not True or not isinstance(sidecar.get("files"), list):
        return "its sidecar does not say it is complete"
    if not isinstance(sidecar.get("key"), dict) or fcache.cache_key(sidecar["key"]) != folder.name:
        return "its recorded key does not match its folder name"
    for entry in sidecar["files"]:
        path = folder / str(entry.get("file", ""))
        if not isinstance(entry.get("file"), str) or "/" in entry["file"] or not path.is_file():
            return f"{entry.get('file')!r} is missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{entry['file']} is {'truncated' if size < (entry.get('bytes') or 0) else 'resized'}: " \
                   f"{size:,} bytes, {entry.get('bytes')} recorded"
        if fcache.crc32_of(path) != entry.get("crc32"):
            return f"{entry['file']} fails its CRC-32 check: its bytes were changed"
    return None


def publish_folder(tmp: Path, final: Path, *, replace: bool = False,
                   check: Callable[[Path], str | None] | None = None) -> Path:
    """Rename the finished folder ``tmp`` to ``final``. A good entry already there (``check(final)`` is
    None: another process won the race) is kept and ``tmp`` dropped, unless ``replace``."""
    check = check or damage
    if final.exists():
        if not replace and check(final) is None:
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        old = final.with_name(f"{final.name}{_OLD}{os.getpid()}-{secrets.token_hex(3)}")
        try:
            os.replace(final, old)
        except FileNotFoundError:  # another process moved it first
            pass
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:  # another process published between our check and our rename
        if check(final) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def save(kind: str, key_parts: dict, value, *, version: int, cache=None, replace: bool = False,
         seconds: float | None = None) -> Path:
    """Store ``value`` as the artefact of these inputs and return its folder (atomic; see the module doc).

    An existing good entry is kept unless ``replace``. ``seconds``: how long computing it took (recorded).
    """
    key = full_key(kind, key_parts, version)
    fmt = value_format(value)
    final = artifacts_root(cache) / kind / fcache.cache_key(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    fcache.remove_stale(final.parent, final.name)
    tmp = final.with_name(f"{final.name}{_TMP}{os.getpid()}-{secrets.token_hex(3)}")
    tmp.mkdir()
    try:
        _write_value(tmp, value, fmt)
        files = [{"file": p.name, "bytes": p.stat().st_size, "crc32": fcache.crc32_of(p)}
                 for p in sorted(tmp.iterdir())]
        sidecar = {"kind": kind, "key": key, "format": fmt, "files": files, "seconds": seconds,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "complete": True}
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1, sort_keys=True))
        return publish_folder(tmp, final, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_folder(folder: Path):
    """The value stored in an entry folder; :class:`CorruptArtifactError` naming it when it cannot be trusted."""
    reason = damage(folder)
    if reason is not None:
        raise CorruptArtifactError(f"artifact {folder} is damaged ({reason}): delete that folder to recompute it")
    try:
        return _read_value(folder, read_sidecar(folder).get("format"))
    except CorruptArtifactError as err:
        raise CorruptArtifactError(f"artifact {folder}: {err}: delete that folder to recompute it") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError, RuntimeError) as err:
        raise CorruptArtifactError(f"artifact {folder} cannot be read back ({type(err).__name__}: {err}): "
                                   "delete that folder to recompute it") from err


def lookup(kind: str, key_parts: dict, *, version: int, cache=None, warn: bool = True) -> Path | None:
    """The folder of a good entry for exactly these inputs, or None (a damaged one is logged with ``warn``)."""
    key = full_key(kind, key_parts, version)
    folder = artifacts_root(cache) / kind / fcache.cache_key(key)
    if not folder.is_dir():
        return None
    reason = damage(folder)
    if reason is None and read_sidecar(folder)["key"] != key:
        reason = "stale: it was made for other inputs"
    if reason is not None:
        if warn:
            log.warning("artifact %s is %s; recomputing it", folder, reason)
        return None
    return folder


def load(kind: str, key_parts: dict, *, version: int, cache=None):
    """The cached artefact of these inputs; ``KeyError`` naming the folder and the fix when there is none."""
    folder = lookup(kind, key_parts, version=version, cache=cache)
    if folder is None:
        raise KeyError(f"no good {kind} artefact cached for these inputs in {artifacts_root(cache) / kind}: run the "
                       "step that trains it (or `retrievalkit reproduce`), or `retrievalkit cache unpack` a lab's "
                       "cache")
    return load_folder(folder)


def cached(kind: str, key_parts: dict, compute: Callable[[], T], *, version: int, cache=None,
           refresh: bool = False) -> T:
    """``compute()``'s result for these inputs, computed once and then read from the cache.

    ``key_parts``: JSON data with a ``"data"`` entry and everything else that changes the result
    (settings, seed); ``version``: this kind's code version. A missing, damaged or stale entry is
    recomputed and stored; ``refresh=True`` recomputes and replaces it. The value returned is the
    one read back from the cache, so a first run and a later one see the same object. Where the
    cache cannot be written (a read-only lab folder), the computed value is returned with a warning.
    """
    folder = artifacts_root(cache) / kind / fcache.cache_key(full_key(kind, key_parts, version))
    replace = refresh
    if not refresh and lookup(kind, key_parts, version=version, cache=cache) is not None:
        try:
            return load_folder(folder)
        except CorruptArtifactError as err:  # intact files that do not build the value: replace them
            log.warning("%s; recomputing it", err)
            replace = True
    start = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - start
    try:
        # A damaged entry is replaced anyway; a good one published meanwhile by another process wins.
        published = save(kind, key_parts, value, version=version, cache=cache, replace=replace, seconds=seconds)
    except OSError as err:
        log.warning("could not cache the %s artefact under %s (%s); using it uncached", kind, folder, err)
        return value
    return load_folder(published)


def seconds(kind: str, key_parts: dict, *, version: int, cache=None) -> float | None:
    """How long computing the cached artefact of these inputs took when it was made (None: not cached).

    A table's ``fit_s`` / ``train_s`` column reports this, so it keeps meaning "time to train" on a run
    that read the artefact back."""
    folder = lookup(kind, key_parts, version=version, cache=cache, warn=False)
    return None if folder is None else read_sidecar(folder).get("seconds")


def list_cached(cache=None) -> list[dict]:
    """One summary dict per published artefact: kind, key, format, size, how long it took, its folder."""
    root = artifacts_root(cache)
    rows = []
    for folder in sorted(root.glob("*/*")) if root.is_dir() else []:
        sidecar = read_sidecar(folder) if folder.is_dir() and _TMP not in folder.name and _OLD not in folder.name \
            else None
        if sidecar is None:
            continue
        rows.append({"kind": folder.parent.name, "key": folder.name, "format": sidecar.get("format"),
                     "parts": sidecar.get("key", {}).get("parts"), "seconds": sidecar.get("seconds"),
                     "megabytes": sum(f.stat().st_size for f in folder.iterdir()) / 2**20, "folder": str(folder)})
    return rows


__all__ = ["CorruptArtifactError", "cached", "seconds", "fingerprint", "settings", "full_key", "entry_folder", "save", "load", "lookup",
           "load_folder", "damage", "publish_folder", "value_format", "list_cached", "artifacts_root", "read_sidecar",
           "SIDECAR"]
