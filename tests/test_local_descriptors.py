"""Local descriptors (retrievalkit.embedding.local): conv-map columns, the flat batch, SIFT / RootSIFT."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrievalkit import embedding as emb


def textured(height=96, width=128, seed=0) -> np.ndarray:
    """A gray uint8 image with blobs and edges at several scales, so SIFT finds keypoints."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((height // 8, width // 8)) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    fine = rng.random((height, width)) * 40
    return np.clip(np.asarray(coarse, np.float32) * 0.8 + fine, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- conv columns
def coded_maps(n=2, c=3, h=2, w=4):
    """maps[i, ch, y, x] = 1000 i + 100 ch + 10 y + x: every value says where it came from."""
    i, ch, y, x = np.meshgrid(np.arange(n), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return (1000 * i + 100 * ch + 10 * y + x).astype(np.float32)


def test_conv_columns_shapes_and_ordering():
    maps = coded_maps()
    local = emb.conv_columns(maps)
    assert local.descriptors.shape == (2 * 2 * 4, 3) and local.descriptors.dtype == np.float32
    np.testing.assert_array_equal(local.image_index, np.repeat([0, 1], 8))
    np.testing.assert_array_equal(local.counts, [8, 8])
    positions = emb.column_positions(2, 4)
    for row in range(16):
        image, p = divmod(row, 8)
        y, x = positions[p]
        assert p == y * 4 + x  # row-major over the map
        np.testing.assert_array_equal(local.descriptors[row], maps[image, :, y, x])
    # the same order as torch's flatten(2).transpose(1, 2)
    expected = torch.from_numpy(maps).flatten(2).transpose(1, 2).reshape(-1, 3).numpy()
    np.testing.assert_array_equal(local.descriptors, expected)


def test_conv_columns_accepts_torch_float16_memmaps_and_chunks(tmp_path):
    maps = coded_maps(n=5, c=4, h=3, w=3)
    reference = emb.conv_columns(maps).descriptors
    np.testing.assert_array_equal(emb.conv_columns(torch.from_numpy(maps)).descriptors, reference)
    np.testing.assert_array_equal(emb.conv_columns(maps, chunk=2).descriptors, reference)
    np.save(tmp_path / "maps.npy", (maps / 1000).astype(np.float16))
    cached = emb.conv_columns(np.load(tmp_path / "maps.npy", mmap_mode="r"), chunk=2)
    np.testing.assert_allclose(cached.descriptors, reference / 1000, rtol=1e-3)
    single = emb.conv_columns(maps[1])
    assert single.n_images == 1 and np.array_equal(single.descriptors, reference[9:18])
    with pytest.raises(ValueError, match="N×C×H×W"):
        emb.conv_columns(maps[0, 0])


def test_conv_columns_l2_normalised_keeps_zero_columns_zero():
    maps = np.abs(np.random.default_rng(0).normal(size=(2, 6, 3, 3))).astype(np.float32)
    maps[0, :, 1, 1] = 0  # a dead position after ReLU
    local = emb.conv_columns(maps, normalize=True)
    norms = np.linalg.norm(local.descriptors, axis=1)
    assert norms[4] == 0 and np.isfinite(local.descriptors).all()
    np.testing.assert_allclose(np.delete(norms, 4), 1, atol=1e-5)


def test_local_descriptor_batches():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(t, 3)) for t in (2, 0, 4)]
    local = emb.LocalDescriptors.from_list(arrays)
    np.testing.assert_array_equal(local.offsets, [0, 2, 2, 6])
    assert local.of_image(1).shape == (0, 3) and local.n_images == 3 and local.dim == 3
    for got, want in zip(local.to_list(), arrays):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    picked = local.select([2, 0])
    np.testing.assert_array_equal(picked.counts, [4, 2])
    np.testing.assert_allclose(picked.of_image(0), arrays[2], rtol=1e-6)
    shuffled = emb.LocalDescriptors.from_index(local.descriptors[::-1], local.image_index[::-1], 3)
    np.testing.assert_array_equal(shuffled.image_index, local.image_index)
    np.testing.assert_allclose(shuffled.of_image(2), arrays[2][::-1], rtol=1e-6)  # order within an image kept
    with pytest.raises(ValueError, match="non-decreasing"):
        emb.LocalDescriptors(local.descriptors, local.image_index[::-1], 3)
    with pytest.raises(ValueError, match="same width"):
        emb.LocalDescriptors.from_list([np.zeros((2, 3)), np.zeros((2, 4))])


# --------------------------------------------------------------------------- SIFT
def test_sift_detect_on_gray_rgb_and_pil_agree():
    gray = textured()
    desc = emb.sift_descriptors(gray)
    assert desc.dtype == np.float32 and desc.ndim == 2 and desc.shape[1] == 128 and len(desc) > 10
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(emb.sift_descriptors(rgb), desc)
    np.testing.assert_array_equal(emb.sift_descriptors(Image.fromarray(gray)), desc)  # PIL mode "L"
    np.testing.assert_array_equal(emb.sift_descriptors(Image.fromarray(rgb)), desc)
    np.testing.assert_array_equal(emb.sift_descriptors(gray.astype(np.float32) / 255), desc)
    few, keypoints = emb.sift_descriptors(gray, max_keypoints=5, return_keypoints=True)
    assert few.shape == (5, 128) and keypoints.shape == (5, 4)


@pytest.mark.parametrize("mode", ["detect", "dense"])
def test_sift_on_tiny_images_is_empty_not_an_error(mode):
    for tiny in (textured(8, 8), np.zeros((8, 8, 3), np.uint8), np.zeros((1, 1), np.uint8)):
        desc = emb.sift_descriptors(tiny, mode=mode)
        assert desc.shape == (0, 128) and desc.dtype == np.float32
    assert emb.sift_descriptors(textured(8, 8), mode=mode, root=True).shape == (0, 128)


def test_sift_on_rgba_composites_transparency_on_white():
    gray = textured()
    rgba = np.dstack([np.repeat(gray[:, :, None], 3, axis=2), np.full(gray.shape, 255, np.uint8)])
    rgba[:, 64:, 3] = 0  # right half transparent (its stored colour must not matter)
    rgba[:, 64:, :3] = 0
    on_white = gray.copy()
    on_white[:, 64:] = 255
    expected = emb.sift_descriptors(on_white, mode="dense")
    np.testing.assert_array_equal(emb.sift_descriptors(rgba, mode="dense"), expected)
    np.testing.assert_array_equal(emb.sift_descriptors(Image.fromarray(rgba, "RGBA"), mode="dense"), expected)


@pytest.mark.parametrize("height, width, step, size", [(50, 70, 8, 16), (64, 64, 16, 16), (40, 33, 5, 12), (15, 100, 8, 16)])
def test_dense_sift_count_equals_the_grid_size(height, width, step, size):
    image = textured(height, width)
    desc, keypoints = emb.sift_descriptors(image, mode="dense", step=step, size=size, return_keypoints=True)
    n_x = (width - size) // step + 1 if width >= size else 0
    n_y = (height - size) // step + 1 if height >= size else 0
    assert desc.shape == (n_x * n_y, 128)
    assert len(emb.dense_grid(height, width, step, size)) == n_x * n_y
    if len(keypoints):
        assert keypoints[:, 0].min() == size / 2 and keypoints[:, 0].max() <= width - size / 2
        assert (keypoints[:, 2] == size).all()


def test_rootsift_rows_are_unit_norm_and_non_negative():
    image = textured()
    for mode in ("detect", "dense"):
        sift = emb.sift_descriptors(image, mode=mode)
        root = emb.sift_descriptors(image, mode=mode, root=True)
        assert root.shape == sift.shape and len(root) > 0
        assert (root >= 0).all()
        np.testing.assert_allclose(np.linalg.norm(root, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(root, np.sqrt(sift / sift.sum(axis=1, keepdims=True)), rtol=1e-5, atol=1e-7)
        assert not np.allclose(root, sift / np.linalg.norm(sift, axis=1, keepdims=True))
    flat = emb.sift_descriptors(np.full((40, 40), 128, np.uint8), mode="dense", root=True)
    assert np.isfinite(flat).all()  # flat patches give zero SIFT; RootSIFT keeps them zero, no NaN


def test_extract_sift_skips_unreadable_files_and_keeps_alignment(tmp_path, caplog):
    Image.fromarray(textured()).save(tmp_path / "gray.png")
    rgba = np.dstack([np.repeat(textured(seed=1)[:, :, None], 3, axis=2), np.full((96, 128), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(textured(6, 6)).save(tmp_path / "tiny.png")
    paths = [tmp_path / "gray.png", tmp_path / "broken.jpg", tmp_path / "rgba.png", tmp_path / "tiny.png"]
    local, skipped = emb.extract_sift(paths, mode="dense", root=True, progress=False)
    assert local.n_images == 4 and [p for p, _ in skipped] == [str(tmp_path / "broken.jpg")]
    assert "broken.jpg" in caplog.text
    counts = local.counts
    assert counts[1] == 0 and counts[3] == 0 and counts[0] == counts[2] == 15 * 11
    np.testing.assert_array_equal(local.of_image(0), emb.sift_descriptors(Image.open(paths[0]).convert("RGB"), mode="dense", root=True))
    threaded, _ = emb.extract_sift(paths, mode="dense", root=True, progress=False, workers=2)
    np.testing.assert_array_equal(threaded.descriptors, local.descriptors)
    np.testing.assert_array_equal(threaded.image_index, local.image_index)


_REPEAT_SCRIPT = """
import hashlib, sys, warnings
import cv2, faiss, numpy as np
from threadpoolctl import threadpool_limits
from retrievalkit import embedding as emb
warnings.simplefilter("ignore")
threads, paths = int(sys.argv[1]), sys.argv[2:]
cv2.setNumThreads(threads)
faiss.omp_set_num_threads(threads)
with threadpool_limits(threads):
    local, _ = emb.extract_sift(paths, root=True, workers=2)
    kmeans = emb.KMeansCodebook(k=16, seed=0).fit(local, split="learn")
    gmm = emb.GMMCodebook(k=4, seed=0, n_iter=10).fit(local, split="learn")
    vlad = emb.VLAD(kmeans).encode(local)
    fv = emb.FisherVector(gmm).encode(local)
digest = hashlib.sha256()
for a in (local.descriptors, local.image_index, kmeans.centroids_, gmm.means_, gmm.variances_, vlad, fv):
    digest.update(np.ascontiguousarray(a).tobytes())
print(local.n_descriptors, digest.hexdigest())
"""


def test_rootsift_codebooks_and_encodings_repeat_bit_for_bit_across_processes_and_thread_counts(coil_home):
    """Two fresh processes, one and four threads (OpenCV, faiss, OpenMP/BLAS), give identical bytes.

    Global state (thread pools, OpenCV's parallel backend, hash seeds) differs between processes,
    so this runs in subprocesses; k-means and the GMM are seeded through their arguments.
    """
    import subprocess
    import sys

    paths = sorted(str(p) for p in coil_home.rglob("obj1__*.png"))[:12]
    paths += sorted(str(p) for p in coil_home.rglob("obj2__*.png"))[:12]
    assert len(paths) == 24
    outputs = [subprocess.run([sys.executable, "-c", _REPEAT_SCRIPT, str(n), *paths], capture_output=True,
                              text=True, check=True).stdout.split() for n in (1, 4)]
    assert int(outputs[0][0]) > 100  # real keypoints, not empty images
    assert outputs[0] == outputs[1]
