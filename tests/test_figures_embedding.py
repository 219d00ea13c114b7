"""figures_embedding: the attention heat-map overlay (moved here from nn.attention: it draws, it does not compute)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrievalkit import nn as rnn
from retrievalkit.figures_embedding import overlay


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_overlay_has_the_images_shape_and_dtype(mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)).convert(mode)
    rgb = np.asarray(image.convert("RGB"))
    attention = torch.zeros(5, 3)
    attention[0, 0] = 1.0
    out = overlay(image, attention)
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert not np.array_equal(out, rgb)
    np.testing.assert_array_equal(overlay(image, attention, alpha=0.0), rgb)
    heat = overlay(image, attention, alpha=1.0)
    # jet: the peak (top-left) is red, the far corner blue
    assert heat[0, 0, 0] > heat[0, 0, 2] and heat[-1, -1, 2] > heat[-1, -1, 0]


def test_overlay_is_plotting_not_attention():
    assert not hasattr(rnn, "overlay") and not hasattr(rnn.attention, "overlay")
