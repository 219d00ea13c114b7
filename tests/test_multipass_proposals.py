"""Region proposals for multi-pass extraction (Survey Figure 2.7d; retrievalkit.features.multipass).

Geometry tests on synthetic activation maps, then the two-pass extraction on three tiny images
with EfficientNet-Lite0's bundled ImageNet weights (offline), compared with describing the proposed
crops by hand.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from PIL import Image

from retrievalkit.backbones import load_backbone
from retrievalkit.datasets.images import read_image
from retrievalkit.features import (
    ImageSource, ProposalScheme, box_iou, extract, extract_proposals, make_scheme, nms, proposal_boxes,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- geometry
def test_box_iou_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(4 / 100)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no pixel
    assert box_iou((0, 0, 4, 4), (6, 6, 9, 9)) == 0.0


def test_nms_removes_a_duplicate_and_keeps_score_order():
    boxes = [(0, 0, 50, 50), (1, 1, 51, 51), (60, 60, 100, 100), (0, 0, 30, 30)]
    assert nms(boxes, [0.9, 0.8, 0.7, 0.95], iou=0.5) == [3, 0, 2]  # box 1 is box 0 shifted by a pixel
    assert nms(boxes, [0.8, 0.9, 0.7, 0.95], iou=0.5) == [3, 1, 2]  # the better-scored twin survives
    assert nms(boxes, [1, 1, 1, 1], iou=0.99) == [0, 1, 2, 3]  # ties keep the input order


def _blob_map(shape, blobs, seed=0):
    """A small noisy background with bright rectangles at ``blobs`` = [(r1, r2, c1, c2)] (map cells)."""
    a = np.random.default_rng(seed).uniform(0, 0.1, shape)
    for strength, (r1, r2, c1, c2) in zip((3.0, 2.0), blobs):
        a[r1:r2, c1:c2] += strength
    return a


@pytest.mark.parametrize("width,height", [(140, 140), (200, 150), (97, 61)])
def test_two_blobs_give_boxes_around_both(width, height):
    shape, blobs = (14, 14), [(2, 5, 3, 6), (8, 12, 9, 13)]
    boxes = proposal_boxes(width, height, _blob_map(shape, blobs))
    assert boxes[0] == (0, 0, width, height)
    for r1, r2, c1, c2 in blobs:
        truth = (c1 * width / 14, r1 * height / 14, c2 * width / 14, r2 * height / 14)
        best = max(box_iou(truth, b) for b in boxes[1:])
        assert best >= 0.5, (truth, boxes)
    # and no proposal is a box around both blobs at once when each has its own
    assert len(boxes) >= 3


def test_boxes_inside_image_whole_image_first_and_top_respected():
    rng = np.random.default_rng(3)
    for width, height in [(128, 96), (37, 91), (300, 20), (5, 5)]:
        for shape in [(7, 7), (3, 5), (1, 1), (12, 4)]:
            a = rng.gamma(0.5, size=shape)
            for top in (0, 2, 6):
                boxes = proposal_boxes(width, height, a, top=top)
                assert boxes[0] == (0, 0, width, height)
                assert 1 <= len(boxes) <= top + 1
                for x1, y1, x2, y2 in boxes:
                    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
                assert len(set(boxes)) == len(boxes)


def test_flat_map_proposes_only_the_whole_image_and_channels_are_summed():
    assert proposal_boxes(64, 48, np.zeros((5, 5))) == [(0, 0, 64, 48)]
    a = _blob_map((3, 9, 9), [(1, 3, 1, 3), (5, 8, 5, 8)])[:, :, :]
    assert proposal_boxes(90, 90, a) == proposal_boxes(90, 90, a.sum(axis=0))


def test_proposals_are_deterministic():
    a = _blob_map((10, 10), [(1, 4, 1, 4), (6, 9, 5, 9)], seed=7)
    scheme = ProposalScheme(top=3)
    assert scheme.boxes(120, 80, a) == scheme.boxes(120, 80, a.copy()) == proposal_boxes(120, 80, a, top=3)
    assert scheme.config() == {"kind": "proposals", "top": 3, "quantiles": (0.75, 0.9), "iou": 0.5, "side": 224,
                               "aggregate": "max"}


def test_bad_parameters_and_single_pass_path_refuse_proposals():
    with pytest.raises(ValueError, match="quantiles"):
        ProposalScheme(quantiles=(1.5,))
    with pytest.raises(ValueError, match="aggregation"):
        ProposalScheme(aggregate="sum")
    with pytest.raises(ValueError, match="extract_proposals"):
        make_scheme("proposals")
    with pytest.raises(ValueError, match="extract_proposals"):
        make_scheme(ProposalScheme())


# --------------------------------------------------------------------------- the two-pass extraction
@pytest.fixture(scope="module")
def lite():
    return load_backbone("efficientnet_lite0", device="cpu")


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVALKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(96, 80), (80, 80), (72, 100)]):
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.full((h, w, 3), 40.0) + rng.normal(0, 10, (h, w, 3))
        # one bright textured object off-centre, so the map has a blob to propose
        obj = (abs(xx - w * (0.3 + 0.2 * i)) < w / 5) & (abs(yy - h * 0.6) < h / 5)
        pixels[obj] = 255 * np.stack([np.sin(xx[obj] / 3) ** 2, np.cos(yy[obj] / 4) ** 2, np.full(obj.sum(), 0.5)], -1)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


RUN = {"size": 64, "resize": "fixed", "workers": 0, "batch_size": 4, "progress": False}


def test_extract_proposals_merges_the_regions_it_proposes(tmp_path, images, lite):
    scheme = ProposalScheme(top=3, side=128)
    f = extract_proposals(images, lite, ["head", "pool"], ["gem"], scheme, **RUN)
    assert f.get("head", "gem").shape == (3, lite.out_channels("head"))
    # pass 1 by hand: the boxes come from the channel-summed last map of a whole-image pass
    first = extract(images, lite, [lite.default_layer], ["gem"], size=128, resize="fixed", keep_maps=True,
                    workers=0, progress=False)
    for i, path in enumerate(images):
        assert f.boxes[i] == scheme.boxes(*read_image(path).size, first.maps()[i])
    assert any(len(b) > 1 for b in f.boxes), f.boxes  # an object was proposed somewhere
    assert f.forwards_per_image == pytest.approx(1 + sum(map(len, f.boxes)) / 3)
    # pass 2 by hand: describe each region of image 1 as an image of its own, max over unit vectors
    img = read_image(images[1])
    crops = []
    for k, box in enumerate(f.boxes[1]):
        crops.append(str(tmp_path / f"crop{k}.png"))
        img.crop(box).save(crops[-1])
    by_hand = extract(crops, lite, ["head", "pool"], ["gem"], **RUN)
    for layer, pooling in [("head", "gem"), ("pool", None)]:
        expected = by_hand.get(layer, pooling).max(axis=0)
        got = f.get(layer, pooling, normalize=False)[1]
        assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def test_query_crops_are_composed_with_the_proposals(tmp_path, images, lite):
    box = (10, 5, 70, 75)
    cropped = str(tmp_path / "cropped.png")
    read_image(images[0], box).save(cropped)
    scheme = ProposalScheme(top=2, side=128, aggregate="mean")
    f_box = extract_proposals(ImageSource("q", [images[0]], [box]), lite, ["head"], ["gem"], scheme, **RUN)
    f_file = extract_proposals([cropped], lite, ["head"], ["gem"], scheme, **RUN)
    assert f_box.boxes == f_file.boxes
    assert_allclose(f_box.get("head", "gem"), f_file.get("head", "gem"), rtol=1e-4, atol=1e-5)
