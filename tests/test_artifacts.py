"""The trained-artefact cache: keys, formats, refusal of damaged or stale entries, concurrent writers."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import retrievalkit
from retrievalkit import artifacts
from retrievalkit.hashing.codes import ITQ
from retrievalkit.nn.attention import AttentionHead
from retrievalkit.whitening import PCAWhitening

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rows():
    return np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)


class Counter:
    """A compute() that counts its calls."""

    def __init__(self, make):
        self.make, self.calls = make, 0

    def __call__(self):
        self.calls += 1
        return self.make()


def parts(X, **settings):
    return {"data": artifacts.fingerprint(X), "settings": settings, "seed": 0}


def the_folder(cache, kind) -> Path:
    (folder,) = (cache / "artifacts" / kind).iterdir()
    return folder


# --------------------------------------------------------------------------- keys
def test_fingerprint_follows_values_dtype_and_shape(rows):
    assert artifacts.fingerprint(rows) == artifacts.fingerprint(rows.copy())
    changed = rows.copy()
    changed[123 // 24, 123 % 24] += 1e-3
    assert artifacts.fingerprint(changed) != artifacts.fingerprint(rows)
    assert artifacts.fingerprint(rows.astype(np.float64)) != artifacts.fingerprint(rows)
    assert artifacts.fingerprint(rows.reshape(24, 200)) != artifacts.fingerprint(rows)
    assert artifacts.fingerprint(torch.from_numpy(rows)) == artifacts.fingerprint(rows)


def test_fingerprint_of_several_arrays_keeps_their_boundaries(rows):
    assert artifacts.fingerprint(rows) == artifacts.fingerprint(*[rows])
    assert artifacts.fingerprint(rows, rows[:2]) != artifacts.fingerprint(rows[:2], rows)
    assert artifacts.fingerprint(rows[:2], rows[2:]) != artifacts.fingerprint(rows[:3], rows[3:])  # same bytes, split
    assert artifacts.fingerprint(rows, np.arange(3)) != artifacts.fingerprint(rows, np.arange(4))


def test_settings_are_the_constructor_arguments_without_progress(rows):
    from retrievalkit.hashing import DeepHash

    quiet, loud = DeepHash(16, epochs=3, progress=False), DeepHash(16, epochs=3, progress=True)
    assert artifacts.settings(quiet) == artifacts.settings(loud)
    assert artifacts.settings(quiet)["class"] == "retrievalkit.hashing.deep:DeepHash"
    assert artifacts.settings(quiet)["params"]["epochs"] == 3 and "progress" not in artifacts.settings(quiet)["params"]
    assert artifacts.settings(DeepHash(16, epochs=4)) != artifacts.settings(quiet)


def test_seconds_is_the_recorded_compute_time(tmp_path, rows):
    assert artifacts.seconds("whitening", parts(rows), version=1, cache=tmp_path) is None
    artifacts.cached("whitening", parts(rows), lambda: PCAWhitening(dim=8).fit(rows), version=1, cache=tmp_path)
    recorded = artifacts.read_sidecar(artifacts.entry_folder("whitening", parts(rows), version=1, cache=tmp_path))
    assert artifacts.seconds("whitening", parts(rows), version=1, cache=tmp_path) == recorded["seconds"] > 0


def test_fingerprint_hashes_in_chunks_like_whole(rows, monkeypatch):
    whole = artifacts.fingerprint(rows)
    monkeypatch.setattr(artifacts, "_FINGERPRINT_CHUNK", 100)  # many steps, last one partial
    assert artifacts.fingerprint(rows) == whole
    assert artifacts.fingerprint(np.asfortranarray(rows)) == whole  # same values, another memory order


def test_a_second_call_reads_the_cache(tmp_path, rows):
    compute = Counter(lambda: PCAWhitening(dim=8).fit(rows))
    first = artifacts.cached("whitening", parts(rows, dim=8), compute, version=1, cache=tmp_path)
    second = artifacts.cached("whitening", parts(rows, dim=8), compute, version=1, cache=tmp_path)
    assert compute.calls == 1
    assert type(second) is PCAWhitening and second.dim == 8
    np.testing.assert_array_equal(first.transform(rows), second.transform(rows))
    np.testing.assert_allclose(second.transform(rows), PCAWhitening(dim=8).fit(rows).transform(rows), atol=1e-6)


@pytest.mark.parametrize("change", ["setting", "seed", "data", "version", "package"])
def test_any_changed_input_recomputes(tmp_path, rows, change, monkeypatch):
    compute = Counter(lambda: {"w": np.ones(3)})
    artifacts.cached("itq", parts(rows, n_bits=16), compute, version=1, cache=tmp_path)
    key, version = parts(rows, n_bits=16), 1
    if change == "setting":
        key = parts(rows, n_bits=32)
    elif change == "seed":
        key["seed"] = 1
    elif change == "data":
        key = parts(rows[1:], n_bits=16)
    elif change == "version":
        version = 2
    else:
        monkeypatch.setattr(artifacts, "__version__", retrievalkit.__version__ + ".dev1")
    artifacts.cached("itq", key, compute, version=version, cache=tmp_path)
    assert compute.calls == 2
    assert len(list((tmp_path / "artifacts" / "itq").iterdir())) == 2


def test_keys_must_name_their_data_and_hold_json(tmp_path, rows):
    with pytest.raises(ValueError, match="'data'"):
        artifacts.cached("whitening", {"settings": {"dim": 8}}, lambda: 1, version=1, cache=tmp_path)
    with pytest.raises(TypeError, match="fingerprint"):
        artifacts.cached("whitening", {"data": rows}, lambda: 1, version=1, cache=tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        artifacts.cached("../escape", {"data": "x"}, lambda: 1, version=1, cache=tmp_path)


# --------------------------------------------------------------------------- formats
def test_every_value_type_round_trips(tmp_path, rows):
    torch.manual_seed(0)
    head = AttentionHead(24, hidden=4)
    values = {
        "array": rows,
        "arrays": {"means": rows[:3], "labels": np.arange(5)},
        "json": {"k": 5, "alpha": 0.9, "picked": [1, 2]},
        "state_dict": head.state_dict(),
        "estimator": ITQ(8, 3, seed=1).fit(rows),
        "record": {"head": head.state_dict(), "means": rows[:3], "history": [{"epoch": 0, "loss": float("nan")}],
                   "best_epoch": 2, "empty_state": {}},
    }
    for fmt, value in values.items():
        assert artifacts.value_format(value) == fmt
        back = artifacts.cached(fmt, {"data": fmt}, lambda value=value: value, version=1, cache=tmp_path)
        if fmt == "array":
            np.testing.assert_array_equal(back, rows)
        elif fmt == "arrays":
            assert sorted(back) == ["labels", "means"]
            np.testing.assert_array_equal(back["labels"], np.arange(5))
        elif fmt == "json":
            assert back == value
        elif fmt == "state_dict":
            assert all(torch.equal(back[k], v) for k, v in value.items())
        elif fmt == "record":  # weights with their history: each entry comes back as it went in
            assert sorted(back) == sorted(value) and back["best_epoch"] == 2 and back["empty_state"] == {}
            assert all(torch.equal(back["head"][k], v) for k, v in value["head"].items())
            assert list(back["head"]) == list(value["head"])
            np.testing.assert_array_equal(back["means"], rows[:3])
            assert back["history"][0]["epoch"] == 0 and np.isnan(back["history"][0]["loss"])
        else:
            assert type(back) is ITQ and (back.n_bits, back.n_iter, back.seed) == (8, 3, 1)
            np.testing.assert_array_equal(back.transform(rows), value.transform(rows))  # nested pca_ came back too
            np.testing.assert_array_equal(back.loss_history_, value.loss_history_)


def test_an_nn_module_comes_back_with_its_weights(tmp_path):
    torch.manual_seed(0)
    head = AttentionHead(6, hidden=3).eval()
    back = artifacts.cached("attention", {"data": "maps"}, lambda: head, version=1, cache=tmp_path)
    assert type(back) is AttentionHead and not back.training
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(back(x), head(x))


def test_nothing_is_pickled(tmp_path, rows):
    artifacts.cached("estimator", {"data": "x"}, lambda: ITQ(8, 2).fit(rows), version=1, cache=tmp_path)
    folder = the_folder(tmp_path, "estimator")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "artifact.json", "estimator.json"]
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:  # raises if any member needed pickle
        assert {"rotation_", "pca_.mean_"} <= set(npz.files)


def test_a_stored_class_outside_the_package_is_refused(tmp_path, rows, caplog):
    kind, key = "estimator", {"data": "x"}
    artifacts.cached(kind, key, lambda: ITQ(8, 2).fit(rows), version=1, cache=tmp_path)
    folder = the_folder(tmp_path, kind)
    state = json.loads((folder / "estimator.json").read_text())
    state["class"] = "os:system"
    (folder / "estimator.json").write_text(json.dumps(state))
    _rewrite_checksums(folder)  # a hostile entry with consistent checksums
    with pytest.raises(artifacts.CorruptArtifactError, match="not a retrievalkit class"):
        artifacts.load_folder(folder)
    compute = Counter(lambda: ITQ(8, 2).fit(rows))
    with caplog.at_level(logging.WARNING, logger="retrievalkit.artifacts"):
        back = artifacts.cached(kind, key, compute, version=1, cache=tmp_path)
    assert compute.calls == 1 and type(back) is ITQ and str(folder) in caplog.text


def test_an_unstorable_value_says_what_to_return(tmp_path):
    with pytest.raises(TypeError, match="dict of arrays"):
        artifacts.cached("x", {"data": "x"}, lambda: object(), version=1, cache=tmp_path)
    assert not (tmp_path / "artifacts" / "x").exists()


def test_an_estimator_that_hides_a_constructor_argument_is_refused(tmp_path):
    class Hidden:  # pretends to be ours: its argument is not kept as an attribute
        __module__ = "retrievalkit.fake"

        def __init__(self, scale=1.0):
            self.double_ = 2 * scale

    with pytest.raises(TypeError, match="keeps no attribute 'scale'"):
        artifacts.save("x", {"data": "x"}, Hidden(3.0), version=1, cache=tmp_path)
    assert not list((tmp_path / "artifacts" / "x").iterdir())  # its temporary folder was removed


# --------------------------------------------------------------------------- damaged and stale entries
def _rewrite_checksums(folder: Path) -> None:
    from retrievalkit.features.cache import crc32_of

    sidecar = json.loads((folder / "artifact.json").read_text())
    for entry in sidecar["files"]:
        entry["bytes"], entry["crc32"] = (folder / entry["file"]).stat().st_size, crc32_of(folder / entry["file"])
    (folder / "artifact.json").write_text(json.dumps(sidecar))


@pytest.mark.parametrize("harm", ["truncate", "flip", "incomplete", "no_sidecar", "stale"])
def test_a_damaged_or_stale_entry_is_refused_and_recomputed(tmp_path, rows, harm, caplog):
    key = parts(rows, dim=8)
    compute = Counter(lambda: rows[:4] * 2)
    artifacts.cached("array", key, compute, version=1, cache=tmp_path)
    folder = the_folder(tmp_path, "array")
    data, sidecar_path = folder / "arrays.npz", folder / "artifact.json"
    sidecar = json.loads(sidecar_path.read_text())
    if harm == "truncate":
        data.write_bytes(data.read_bytes()[:-40])
    elif harm == "flip":
        raw = bytearray(data.read_bytes())
        raw[-60] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif harm == "incomplete":
        sidecar_path.write_text(json.dumps({**sidecar, "complete": False}))
    elif harm == "no_sidecar":
        sidecar_path.unlink()
    else:  # an entry whose recorded inputs are not the ones asked for: never served
        sidecar["key"]["parts"]["settings"]["dim"] = 9
        sidecar_path.write_text(json.dumps(sidecar))
    assert artifacts.lookup("array", key, version=1, cache=tmp_path) is None
    with caplog.at_level(logging.WARNING, logger="retrievalkit.artifacts"):
        back = artifacts.cached("array", key, compute, version=1, cache=tmp_path)
    assert compute.calls == 2
    assert str(folder) in caplog.text
    np.testing.assert_array_equal(back, rows[:4] * 2)
    assert artifacts.damage(folder) is None  # replaced by a good entry
    assert artifacts.cached("array", key, compute, version=1, cache=tmp_path) is not None and compute.calls == 2


def test_load_without_an_entry_names_the_fix(tmp_path):
    with pytest.raises(KeyError, match="retrievalkit cache unpack"):
        artifacts.load("itq", {"data": "x"}, version=1, cache=tmp_path)


def test_refresh_recomputes_and_replaces(tmp_path):
    values = iter([1, 2])
    assert artifacts.cached("sel", {"data": "x"}, lambda: next(values), version=1, cache=tmp_path) == 1
    assert artifacts.cached("sel", {"data": "x"}, lambda: next(values), version=1, cache=tmp_path, refresh=True) == 2
    assert artifacts.load("sel", {"data": "x"}, version=1, cache=tmp_path) == 2


def test_an_unwritable_cache_still_returns_the_value(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache folder cannot be created under a file, even by root
    with caplog.at_level(logging.WARNING, logger="retrievalkit.artifacts"):
        value = artifacts.cached("sel", {"data": "x"}, lambda: {"k": 3}, version=1, cache=blocker / "cache")
    assert value == {"k": 3} and "using it uncached" in caplog.text


def test_list_cached_describes_entries(tmp_path, rows):
    artifacts.cached("whitening", parts(rows, dim=8), lambda: PCAWhitening(dim=8).fit(rows), version=1, cache=tmp_path)
    (row,) = artifacts.list_cached(tmp_path)
    assert row["kind"] == "whitening" and row["format"] == "estimator" and row["parts"]["settings"] == {"dim": 8}


# --------------------------------------------------------------------------- concurrent writers
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from retrievalkit import artifacts

    cache, me = Path(sys.argv[1]), sys.argv[2]

    def compute():
        (cache / f"started-{me}").touch()
        deadline = time.time() + 60
        while len(list(cache.glob("started-*"))) < 2:  # both are computing before either publishes
            if time.time() > deadline:
                raise SystemExit("the other writer never started")
            time.sleep(0.02)
        return {"rows": np.full((1000, 64), float(me), dtype=np.float32)}

    value = artifacts.cached("shared", {"data": "same-input"}, compute, version=1, cache=cache)
    print(float(value["rows"][0, 0]))
""")


def test_two_processes_writing_the_same_artefact_both_succeed(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(cache), me], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in ("1", "2")]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert sorted(cache.glob("started-*")) == [cache / "started-1", cache / "started-2"]
    # Both return the published entry, whichever process won: never a mix, nothing left behind.
    read = {float(out) for out, _ in outputs}
    assert len(read) == 1 and read <= {1.0, 2.0}
    (entry,) = (cache / "artifacts" / "shared").iterdir()
    assert artifacts.damage(entry) is None
    assert float(artifacts.load("shared", {"data": "same-input"}, version=1, cache=cache)["rows"][0, 0]) in read
