"""What the extraction's speed-ups must not change (issue 14; Survey §2.3.1): no timings here.

* R-MAC computed by sliding-window maxima equals the paper's definition, region by region
  (every :func:`rmac_regions` square sliced, MAC, L2-normalised, summed), bitwise, on square,
  oblong, tiny and channels_last maps.
* :func:`extract` (in-process and through DataLoader workers, uneven last batch) equals a direct
  computation: read, resize, ``backbone.normalize(x / 255)``, forward, pool with the functions.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from PIL import Image

from retrievalkit.backbones import load_backbone
from retrievalkit.datasets.images import read_image
from retrievalkit.features import extract
from retrievalkit.features.loading import resize_image
from retrievalkit.nn import functional as F
from retrievalkit.rows import l2n

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rmac_by_regions(x, levels=F.RMAC_LEVELS, overlap=F.RMAC_OVERLAP, eps=F.DEFAULT_EPS):
    """R-MAC straight from its definition: one slice per region."""
    regions = F.rmac_regions(x.shape[-2], x.shape[-1], levels, overlap)
    v = torch.stack([x[..., i:i + rh, j:j + rw].amax(dim=(-2, -1)) for i, j, rh, rw in regions], dim=1)
    return l2n(v, eps).sum(dim=1)


@pytest.mark.parametrize("shape", [(4, 32, 7, 7), (3, 16, 4, 4), (2, 8, 9, 9), (2, 8, 8, 8), (2, 8, 12, 30),
                                   (2, 8, 30, 12), (3, 5, 1, 1), (2, 4, 2, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_rmac_equals_the_region_by_region_definition(shape, channels_last):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(shape, generator=g) - 0.3).relu()  # post-ReLU maps: many exact zeros, ties included
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(F.rmac(x), rmac_by_regions(x))
    assert torch.equal(F.rmac(x, levels=2, overlap=0.2), rmac_by_regions(x, levels=2, overlap=0.2))


def test_rmac_still_passes_gradients():
    x = torch.rand(2, 6, 7, 7, requires_grad=True)
    F.rmac(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def lite():
    return load_backbone("efficientnet_lite0", device="cpu")


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i in range(7):
        pixels = rng.integers(0, 256, (48 + 4 * i, 56, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def direct_rows(paths, backbone, size):
    """Every pooling computed by hand, one image at a time (no batching, no DataLoader, no cache)."""
    rows = {name: [] for name in ("mac", "spoc", "gem", "rmac", "crow")}
    with torch.inference_mode():
        for path in paths:
            img = resize_image(read_image(path), "fixed", size)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 255
            fmap = backbone.forward_features(backbone.normalize(x), backbone.default_layer)[backbone.default_layer]
            rows["mac"].append(F.mac(fmap))
            rows["spoc"].append(F.spoc(fmap))
            rows["gem"].append(F.gem(fmap, 3.0))
            rows["rmac"].append(rmac_by_regions(fmap))
            rows["crow"].append(F.crow(fmap))
    return {name: torch.cat(r).numpy() for name, r in rows.items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_extraction_equals_a_direct_computation(images, lite, tmp_path, workers):
    size = 96
    feats = extract(images, lite, size=size, resize="fixed", batch_size=3, workers=workers,
                    cache=tmp_path / f"cache{workers}", progress=False)
    expected = direct_rows(images, lite, size)
    for name, want in expected.items():
        got = feats.get("head", name, normalize=False)
        assert got.dtype == np.float32 and got.shape == want.shape
        # batch of 3 vs 1 changes the conv kernels' summation order: float32 noise only
        assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()), err_msg=name)
