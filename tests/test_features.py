"""Tests for retrievalkit.features (Survey §2.3.1; taught in notebooks/02_feature_layers).

Everything runs on tiny images written into tmp_path, at 64 px, with a cache folder inside
tmp_path. The main backbone is EfficientNet-Lite0 with its bundled ImageNet weights (offline, 0.3 s
to load): with random weights its activations vanish (~1e-9 at ``head``) and every image would get
nearly the same descriptor, which would make the comparisons below unable to fail.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from PIL import Image

from retrievalkit.backbones import load_backbone
from retrievalkit.datasets.images import read_image
from retrievalkit.features import (
    Features, PatchScheme, concat_normalized, dense_boxes, extract, fuse_layers, fuse_models, grid_boxes,
    plan_extraction, pyramid_boxes,
)
from retrievalkit.features import cache as store
from retrievalkit.nn import functional as F

SIZE = 64
SIZES = [(64, 48), (50, 70), (80, 80), (40, 40), (96, 64), (64, 48), (72, 30)]  # (width, height)
RTOL, ATOL = 1e-4, 1e-5


def assert_close(actual, expected, **kw):
    """Float32 agreement up to the noise of different batch compositions, relative to the array's scale."""
    expected = np.asarray(expected)
    assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(expected).max())), **kw)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path / "cache" / store.SUBDIR


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite():
    return load_backbone("efficientnet_lite0", device="cpu")


def _write_images(folder, sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(sizes):
        # smooth colour gradients plus noise, so activations differ from image to image
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)) + rng.integers(-60, 60, 3), 0, 255).astype(np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def images(tmp_path):
    return _write_images(tmp_path / "images")


def _run(paths, backbone, **kw):
    kw = {"size": SIZE, "resize": "fixed", "batch_size": 2, "workers": 0, "pooling": ("mac", "gem"), **kw}
    return extract(paths, backbone, **kw)


def _by_hand_input(path, backbone, size=SIZE, resize="fixed", scale=1.0, box=None):
    img = read_image(path)
    if box is not None:
        img = img.crop(box)
    if resize == "fixed":
        w = h = round(size * scale)
    else:
        f = size * scale / max(img.size)
        w, h = round(img.width * f), round(img.height * f)
    img = img.resize((w, h), Image.BILINEAR)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    return backbone.normalize(x)


# --------------------------------------------------------------------------- correctness of the rows
@pytest.mark.parametrize("resize", ["fixed", "max_side"])
def test_pooled_rows_equal_pooling_by_hand(images, lite, resize):
    feats = _run(images, lite, resize=resize, layers=["stage6", "head", "pool"], batch_size=3,
                 pooling=("mac", "spoc", ("gem", {"p": 3.0}), "rmac", "crow"), cache=False)
    by_hand = {}
    with torch.inference_mode():
        for path in images:
            out = lite.forward_features(_by_hand_input(path, lite, resize=resize), ["stage6", "head", "pool"])
            for layer in ("stage6", "head"):
                x = out[layer]
                for name, value in {"mac": F.mac(x), "spoc": F.spoc(x), "gem(p=3.0)": F.gem(x, 3.0),
                                    "rmac": F.rmac(x), "crow": F.crow(x)}.items():
                    by_hand.setdefault((layer, name), []).append(value[0].numpy())
            by_hand.setdefault(("pool", None), []).append(out["pool"][0].numpy())
    for (layer, pooling), rows in by_hand.items():
        got = feats.get(layer, pooling, normalize=False)
        assert got.shape == (len(images), rows[0].shape[0]) and got.dtype == np.float32
        assert_close(got, np.stack(rows), err_msg=f"{layer}/{pooling}")
    unit = feats.get("head", "gem")
    assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-5)
    assert_allclose(unit, feats.get("head", "gem(p=3.0)"))


def test_kept_maps_are_the_conv_maps(images, lite):
    feats = _run(images[:3], lite, keep_maps=True, cache=False)
    maps = feats.maps("head")
    with torch.inference_mode():
        expected = lite.forward_features(_by_hand_input(images[1], lite), ["head"])["head"][0]
    assert maps.shape == (3, *expected.shape) and maps.dtype == np.float16
    assert_allclose(maps[1].astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-3)


def test_unreadable_image_gives_zero_row_and_is_reported(tmp_path, images, lite):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff this is not a jpeg")
    missing = tmp_path / "missing.png"
    paths = images[:2] + [str(corrupt)] + images[2:4] + [str(missing)]
    feats = _run(paths, lite, workers=2)  # through DataLoader worker processes
    rows = feats.get("head", "mac", normalize=False)
    assert rows.shape[0] == len(paths)
    assert not rows[2].any() and not rows[5].any()
    assert all(rows[i].any() for i in (0, 1, 3, 4))
    assert [p for p, _ in feats.skipped] == [str(corrupt), str(missing)]
    assert not feats.get("head", "mac")[2].any()  # normalising a zero row keeps it zero
    clean = _run(images[:4], lite, cache=False)
    assert_close(rows[[0, 1, 3, 4]], clean.get("head", "mac", normalize=False))


def test_in_memory_arrays(lite):
    from retrievalkit.features import ImageSource

    arrays = np.random.default_rng(1).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    feats = _run(ImageSource("fashion_mnist-db", [f"fm/{i}" for i in range(5)], arrays=arrays), lite)
    assert feats.get("head", "gem").shape == (5, lite.out_channels("head"))
    grey = Image.fromarray(arrays[3]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    x = lite.normalize(torch.from_numpy(np.array(grey)).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        expected = F.mac(lite.forward_features(x, "head")["head"])[0].numpy()
    assert_close(feats.get("head", "mac", normalize=False)[3], expected)

    box = (4, 2, 20, 24)
    cropped = _run(ImageSource("fashion_mnist-db", ["fm/3"], bboxes=[box], arrays=arrays[3:4]), lite, cache=False)
    patch = Image.fromarray(arrays[3]).convert("RGB").crop(box).resize((SIZE, SIZE), Image.BILINEAR)
    x = lite.normalize(torch.from_numpy(np.array(patch)).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        expected = F.mac(lite.forward_features(x, "head")["head"])[0].numpy()
    assert_close(cropped.get("head", "mac", normalize=False)[0], expected)


# --------------------------------------------------------------------------- multi-scale
def test_multiscale_is_mean_of_unit_single_scale_vectors(images, lite):
    scales = (1.0, 0.5)
    multi = _run(images, lite, scales=scales, layers=["head", "pool"], cache=False)
    singles = [_run(images, lite, scales=(s,), layers=["head", "pool"], cache=False) for s in scales]
    for layer, pooling in [("head", "mac"), ("head", "gem"), ("pool", None)]:
        expected = np.mean([single.get(layer, pooling) for single in singles], axis=0)
        assert_close(multi.get(layer, pooling, normalize=False), expected)
    assert multi.forwards_per_image == 2


# --------------------------------------------------------------------------- multi-pass
def test_grid_boxes():
    assert grid_boxes(128, 96, 2) == [(0, 0, 64, 48), (64, 0, 128, 48), (0, 48, 64, 96), (64, 48, 128, 96)]
    # 2 windows overlapping by half: window = 100 / 1.5 ≈ 66.7 px, step ≈ 33.3 px
    assert grid_boxes(100, 100, 2, overlap=0.5) == [(0, 0, 67, 67), (33, 0, 100, 67), (0, 33, 67, 100),
                                                    (33, 33, 100, 100)]
    assert len(grid_boxes(90, 60, 3)) == 9 and grid_boxes(90, 60, 3)[4] == (30, 20, 60, 40)


def test_pyramid_boxes():
    boxes = pyramid_boxes(128, 96, (1, 2))
    assert boxes == [(0, 0, 128, 96), (0, 0, 64, 48), (64, 0, 128, 48), (0, 48, 64, 96), (64, 48, 128, 96)]
    assert len(pyramid_boxes(128, 96, (1, 2, 3))) == 1 + 4 + 9


def test_dense_boxes():
    boxes = dense_boxes(128, 128, patch=0.5, stride=0.25)
    assert len(boxes) == 9 and {b[2] - b[0] for b in boxes} == {64}
    assert sorted({b[0] for b in boxes}) == [0, 32, 64]
    # 128×96: side 48, step 24; x starts 0..72 then one flush at 80; y starts 0, 24, 48
    boxes = dense_boxes(128, 96)
    assert sorted({b[0] for b in boxes}) == [0, 24, 48, 72, 80] and sorted({b[1] for b in boxes}) == [0, 24, 48]
    assert len(boxes) == 15
    for w, h in [(128, 96), (37, 91), (300, 20)]:
        for scheme in ("grid", "pyramid", "dense"):
            for x1, y1, x2, y2 in PatchScheme(scheme).boxes(w, h):
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_multipass_aggregates_patch_vectors(tmp_path, images, lite, aggregate):
    scheme = PatchScheme("grid", grid=2, aggregate=aggregate)
    feats = _run(images[:3], lite, multipass=scheme, layers=["head", "pool"], cache=False)
    assert feats.get("head", "mac").shape == (3, lite.out_channels("head"))
    assert feats.forwards_per_image == 4
    # by hand: cut the patches of image 1, describe each as an image of its own, aggregate
    img = read_image(images[1])
    patch_paths = []
    for k, box in enumerate(grid_boxes(*img.size, 2)):
        patch_paths.append(str(tmp_path / f"patch{k}.png"))
        img.crop(box).save(patch_paths[-1])
    patches = _run(patch_paths, lite, layers=["head", "pool"], cache=False)
    for layer, pooling in [("head", "mac"), ("pool", None)]:
        unit = patches.get(layer, pooling)
        expected = unit.max(axis=0) if aggregate == "max" else unit.mean(axis=0)
        assert_close(feats.get(layer, pooling, normalize=False)[1], expected)


def test_pyramid_and_dense_extract_shapes(images, lite):
    for scheme, k in [("pyramid", 5), ({"kind": "dense", "patch": 0.5, "stride": 0.5}, 4)]:
        feats = _run(images[2:4], lite, multipass=scheme, cache=False)  # the two square images
        assert feats.get("head", "gem").shape == (2, lite.out_channels("head"))
        assert feats.forwards_per_image == k


# --------------------------------------------------------------------------- fusion
def test_concat_normalized_blocks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)) * 10, rng.normal(size=(5, 4))
    raw = concat_normalized([a, b], weights=[1.0, 0.5], normalize=False)
    assert raw.shape == (5, 7)
    assert_allclose(np.linalg.norm(raw[:, :3], axis=1), 1.0, rtol=1e-5)
    assert_allclose(np.linalg.norm(raw[:, 3:], axis=1), 0.5, rtol=1e-5)
    fused = concat_normalized([a, b], weights=[1.0, 0.5])
    assert_allclose(np.linalg.norm(fused, axis=1), 1.0, rtol=1e-5)
    assert_allclose(np.linalg.norm(fused[:, 3:], axis=1), 0.5 / np.sqrt(1.25), rtol=1e-5)
    # early fusion = weighted late fusion of cosine similarities
    cos = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T  # noqa: E731
    assert_allclose(raw @ raw.T, cos(a) + 0.25 * cos(b), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        concat_normalized([a, b[:4]])


def test_layer_and_model_fusion(images, lite):
    feats = _run(images, lite, layers=["stage6", "head", "pool"], pooling=("mac",))
    c6, c_head, c_pool = (lite.out_channels(layer) for layer in ("stage6", "head", "pool"))
    fused = fuse_layers(feats, [("stage6", "mac"), ("head", "mac"), "pool"], weights=[1, 1, 2])
    assert fused.shape == (len(images), c6 + c_head + c_pool)
    assert_allclose(np.linalg.norm(fused[:, c6 + c_head:], axis=1), 2 / np.sqrt(6), rtol=1e-4)
    assert_allclose(fused[:, :c6] * np.sqrt(6), feats.get("stage6", "mac"), rtol=1e-4, atol=1e-6)

    other = _changed_backbone("alexnet")
    feats2 = _run(images, other, pooling=("gem",))
    both = fuse_models([(feats, "head", "mac"), feats2])
    assert both.shape == (len(images), c_head + other.out_channels("conv5"))
    with pytest.raises(ValueError, match="same images"):
        fuse_models([feats, _run(images[::-1], other, pooling=("gem",))])


def test_block_pooling_gives_each_block_its_own_poolings_in_one_pass(images, lite):
    """GeM on every block and the full list on the last map: the rows of two separate extractions."""
    both = _run(images, lite, layers=["stage5", "stage6", "head"], pooling=("mac", "rmac", "gem"),
                block_pooling=("gem",))
    assert sorted(both.available()) == sorted([("stage5", "gem"), ("stage6", "gem"), ("head", "mac"),
                                               ("head", "rmac"), ("head", "gem")])
    blocks = _run(images, lite, layers=["stage5", "stage6"], pooling=("gem",))
    last = _run(images, lite, layers=["head"], pooling=("mac", "rmac", "gem"))
    for layer, pooling in both.available():
        expected = (last if layer == "head" else blocks).get(layer, pooling, normalize=False)
        assert_allclose(both.get(layer, pooling, normalize=False), expected, rtol=1e-5, atol=1e-6)
    assert _key(images, lite) == _key(images, lite, block_pooling=None)  # keys without it are unchanged
    assert _key(images, lite, layers=["stage6", "head"], block_pooling=("gem",)) != \
        _key(images, lite, layers=["stage6", "head"])


# --------------------------------------------------------------------------- the cache
def test_rerun_reads_cache_without_forward(images, lite, monkeypatch, cache_home):
    first = _run(images, lite)
    assert not first.from_cache and first.folder.parent == cache_home
    calls = []
    original = lite.forward_features
    monkeypatch.setattr(lite, "forward_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = _run(images, lite)
    assert calls == [] and again.from_cache and again.folder == first.folder
    assert_allclose(again.get("head", "gem"), first.get("head", "gem"))
    assert again.seconds_per_image == first.seconds_per_image  # the original run's timing
    refreshed = _run(images, lite, refresh=True)
    assert calls and not refreshed.from_cache
    assert_close(refreshed.get("head", "mac"), first.get("head", "mac"))
    sidecar = store.read_sidecar(first.folder)
    assert sidecar["complete"] is True and sidecar["n_images"] == len(images)
    assert {a["file"] for a in sidecar["arrays"]} == {"head__mac.npy", "head__gem.npy"}
    assert isinstance(np.load(first.folder / "head__mac.npy", mmap_mode="r"), np.memmap)


@pytest.mark.parametrize("interruption", [RuntimeError("backbone failed"), KeyboardInterrupt()])
def test_interrupted_extraction_leaves_nothing_trusted(images, lite, monkeypatch, cache_home, interruption):
    calls = []
    original = lite.forward_features

    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise interruption
        return original(*args, **kwargs)

    monkeypatch.setattr(lite, "forward_features", failing_forward)
    with pytest.raises(type(interruption)):
        _run(images, lite)  # 7 images, 2 per batch: fails in the third of four batches
    monkeypatch.setattr(lite, "forward_features", original)
    assert len(calls) == 3
    assert not cache_home.exists() or list(cache_home.iterdir()) == []

    # A process killed outright leaves its temporary folder; make one that even claims completeness.
    name = plan_extraction(images, lite, pooling=("mac", "gem"), size=SIZE, resize="fixed").folder_name
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache_home / f"{name}.tmp-{int(dead.stdout)}-abcdef"
    stale.mkdir(parents=True)
    (stale / "head__mac.npy").write_bytes(b"half written")
    (stale / store.SIDECAR).write_text('{"complete": true}')

    later = _run(images, lite)
    assert not later.from_cache and not stale.exists()
    uninterrupted = _run(images, lite, cache=False)
    for pooling in ("mac", "gem"):
        assert_close(later.get("head", pooling), uninterrupted.get("head", pooling))
    assert _run(images, lite).from_cache


def test_corrupt_or_incomplete_published_folder_is_not_trusted(images, lite):
    first = _run(images[:3], lite)
    (first.folder / store.SIDECAR).write_text("{not json")
    again = _run(images[:3], lite)
    assert not again.from_cache and store.read_sidecar(again.folder)["complete"] is True
    sidecar = store.read_sidecar(again.folder)
    (again.folder / store.SIDECAR).write_text(store.json.dumps({**sidecar, "complete": False}))
    assert not _run(images[:3], lite).from_cache
    assert _run(images[:3], lite).from_cache


def _half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_row(path):
    """Same size, other bytes: the last row's values replaced by garbage (a bad disk, a stray write)."""
    data = bytearray(path.read_bytes())
    data[-16:] = b"\x7f" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, said", [(_half, "truncated"), (_flip_last_row, "checksum mismatch")])
def test_damaged_cache_array_is_recomputed_with_a_warning_naming_it(images, lite, caplog, damage, said):
    first = _run(images[:3], lite)
    expected = first.get("head", "gem", normalize=False)
    damaged = first.folder / "head__gem.npy"
    damage(damaged)
    with caplog.at_level("WARNING", logger="retrievalkit.features.cache"):
        again = _run(images[:3], lite)
    assert not again.from_cache
    assert str(damaged) in caplog.text and said in caplog.text and "recomputing" in caplog.text
    assert_close(again.get("head", "gem", normalize=False), expected)
    assert _run(images[:3], lite).from_cache  # the recomputed entry is published and trusted


def test_cache_sidecar_records_size_and_checksum(images, lite):
    feats = _run(images[:2], lite)
    for entry in store.read_sidecar(feats.folder)["arrays"]:
        path = feats.folder / entry["file"]
        assert entry["bytes"] == path.stat().st_size and entry["crc32"] == store.crc32_of(path)


def test_entry_without_checksums_is_size_checked_then_given_them(images, lite):
    first = _run(images[:2], lite)
    sidecar = store.read_sidecar(first.folder)
    legacy = {**sidecar, "arrays": [{k: v for k, v in a.items() if k not in ("bytes", "crc32")}
                                    for a in sidecar["arrays"]]}
    (first.folder / store.SIDECAR).write_text(store.json.dumps(legacy))
    again = _run(images[:2], lite)
    assert again.from_cache
    recorded = store.read_sidecar(first.folder)["arrays"]
    assert all("crc32" in a for a in recorded) and recorded == sidecar["arrays"]
    (first.folder / store.SIDECAR).write_text(store.json.dumps(legacy))
    _half(first.folder / "head__mac.npy")
    assert not _run(images[:2], lite).from_cache


def test_array_damaged_after_lookup_fails_naming_the_file(images, lite):
    feats = _run(images[:2], lite)
    damaged = feats.folder / "head__mac.npy"
    _half(damaged)
    with pytest.raises(store.CorruptCacheError, match=f"{damaged}.*refresh=True"):
        feats.get("head", "mac")


def _key(paths, backbone, **kw):
    kw = {"layers": ["head"], "pooling": ("mac", "gem"), "size": SIZE, "resize": "fixed", **kw}
    return plan_extraction(paths, backbone, **kw).key


def _changed_backbone(name, seed=0):
    torch.manual_seed(seed)
    return load_backbone(name, weights=None, device="cpu")


CHANGES = {
    "layer": lambda p, b: _key(p, b, layers=["stage6"]),
    "extra layer": lambda p, b: _key(p, b, layers=["stage6", "head"]),
    "pooling": lambda p, b: _key(p, b, pooling=("mac", "rmac")),
    "pooling param": lambda p, b: _key(p, b, pooling=("mac", ("gem", {"p": 4.0}))),
    "input size": lambda p, b: _key(p, b, size=SIZE + 32),
    "resize policy": lambda p, b: _key(p, b, resize="max_side"),
    "scales": lambda p, b: _key(p, b, scales=(1.0, 0.5)),
    "multipass": lambda p, b: _key(p, b, multipass="grid"),
    "multipass param": lambda p, b: _key(p, b, multipass=PatchScheme("grid", grid=3)),
    "multipass aggregate": lambda p, b: _key(p, b, multipass=PatchScheme("grid", aggregate="mean")),
    "keep maps": lambda p, b: _key(p, b, keep_maps=True),
    "image list": lambda p, b: _key(p[:-1], b),
    "image order": lambda p, b: _key(p[::-1], b),
    "bbox": lambda p, b: _key(p, b, bboxes=[(0, 0, 20, 20)] + [None] * (len(p) - 1)),
    "dataset name": lambda p, b: _key(p, b, name="holidays"),
    "backbone": lambda p, b: _key(p, _changed_backbone("alexnet"), layers=["conv5"]),
    "weights": lambda p, b: _key(p, _changed_backbone("efficientnet_lite0", seed=1)),
}


@pytest.mark.parametrize("setting", list(CHANGES))
def test_cache_key_changes_with_every_setting(images, lite, setting):
    base = _key(images, lite)
    assert _key(images, lite) == base
    assert CHANGES[setting](images, lite) != base


def test_cache_key_equal_for_equal_settings(images, lite):
    twin = _changed_backbone("efficientnet_lite0", seed=7)
    twin.model.load_state_dict(lite.model.state_dict())
    twin.weights = lite.weights
    assert _key(images, twin) == _key(images, lite)
    assert _key(list(images), lite, pooling=["mac", "gem"]) == _key(images, lite)
    assert _key(images, lite, layers=["head", "head"]) == _key(images, lite)


def test_cache_key_sees_weight_updates_and_replaced_files(images, lite):
    model = _changed_backbone("efficientnet_lite0", seed=3)
    before = _key(images, model)
    with torch.no_grad():
        model.model._fc.weight.add_(1.0)  # as one fine-tuning step would
    assert _key(images, model) != before
    model.weights = "imagenet:other.pth"
    tagged = _key(images, model)
    assert tagged != before
    base = _key(images, lite)
    _write_images(Path(images[0]).parent, sizes=[(33, 33)], seed=5)  # rewrites img0.png
    assert _key(images, lite) != base


def test_features_get_errors_are_explicit(images, lite):
    feats = _run(images[:2], lite, layers=["stage6", "head"], cache=False)
    with pytest.raises(KeyError, match="not extracted"):
        feats.get("stage3", "mac")
    with pytest.raises(KeyError, match="ambiguous|not stored"):
        feats.get("head")
    with pytest.raises(KeyError, match="no maps"):
        feats.maps("head")
    with pytest.raises(ValueError, match="keep_maps"):
        _run(images, lite, resize="max_side", keep_maps=True)
    assert isinstance(feats, Features) and len(feats) == 2


def test_all_images_unreadable_still_gives_zero_arrays(tmp_path, lite):
    paths = [str(tmp_path / "gone1.png"), str(tmp_path / "gone2.png")]
    feats = _run(paths, lite, layers=["head", "pool"], keep_maps=True)
    assert feats.get("head", "mac").shape == (2, lite.out_channels("head"))
    assert feats.get("pool").shape == (2, lite.out_channels("pool"))
    assert feats.maps("head").shape[:2] == (2, lite.out_channels("head"))
    assert not feats.get("head", "gem").any() and len(feats.skipped) == 2


def test_queries_of_a_dataset_are_cropped_to_their_boxes(images, lite):
    from retrievalkit.datasets import QueryGroundTruth, RetrievalDataset

    box = (10, 5, 50, 40)
    dataset = RetrievalDataset(name="toy", root=Path(images[0]).parent, db_paths=[Path(p) for p in images],
                               query_paths=[Path(images[4])], gnd=[QueryGroundTruth.make([0], bbox=box)])
    feats = _run(dataset, lite, images="queries", cache=False)
    assert feats.config["dataset"] == "toy-queries"
    with torch.inference_mode():
        expected = F.mac(lite.forward_features(_by_hand_input(images[4], lite, box=box), "head")["head"])
    assert_close(feats.get("head", "mac", normalize=False), expected.numpy())
    assert plan_extraction(dataset, lite, images="db").key != plan_extraction(dataset, lite, images="queries").key


def test_default_input_upsamples_coil100(images, lite):
    from retrievalkit.features import ImageSource

    coil = plan_extraction(ImageSource("coil100-db", images), lite).config["input"]
    assert (coil["resize"], coil["size"]) == ("fixed", 224)  # 7×7 last map instead of 4×4
    landmarks = plan_extraction(ImageSource("roxford5k-queries", images), lite)
    assert (landmarks.resize, landmarks.size, landmarks.batch_size) == ("max_side", 1024, 2)


def test_commit_keeps_a_rival_published_between_its_check_and_its_rename(tmp_path, monkeypatch):
    config = {"dataset": "race-db", "backbone": "efficientnet_lite0", "layers": ["head"], "version": 1}
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    sidecar = {"arrays": [{"layer": "head", "pooling": "gem", "file": "head__gem.npy",
                           "shape": [3, 4], "dtype": "float32"}], "n_images": 3}
    root = store.features_root(tmp_path)
    winner, loser = store.begin(root, config), store.begin(root, config)
    for tmp in (winner, loser):
        np.save(tmp / "head__gem.npy", rows)
    real_replace = os.replace

    def rival_publishes_first(src, dst):
        if Path(src) == loser:
            monkeypatch.setattr(os, "replace", real_replace)
            store.commit(winner, config, dict(sidecar))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", rival_publishes_first)
    final = store.commit(loser, config, dict(sidecar))
    assert store.lookup(root, config) is not None and final.is_dir()
    assert not loser.exists() and not winner.exists()
