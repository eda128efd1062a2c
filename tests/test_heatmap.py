"""Contracts of cxr_core.heatmap: the Grad-CAM overlay the dashboard's server draws, without TensorFlow.
(The heat map itself, Grad-CAM, is cxr_core.explain's, tested in test_explain.py.)"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cxr_core.heatmap import heatmap_image, overlay

SIZE = 32


def noise_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 1)).astype(np.float32)


def left_hot(size: int = SIZE) -> np.ndarray:
    heatmap = np.zeros((size, size), dtype=np.float32)
    heatmap[:, : size // 2] = 1.0
    return heatmap


def test_overlay_shape_dtype_and_blend():
    image = noise_image()
    heatmap = np.random.default_rng(1).random((SIZE, SIZE)).astype(np.float32)
    rgb = overlay(image, heatmap)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    # alpha 0 is the X-ray alone, in gray.
    np.testing.assert_array_equal(overlay(image, heatmap, alpha=0.0), np.repeat(image, 3, axis=-1))
    # alpha 1 is the colour map alone: hot and cold pixels get different colours.
    colours = overlay(image, heatmap, alpha=1.0)
    assert not np.array_equal(colours[np.unravel_index(heatmap.argmax(), heatmap.shape)],
                              colours[np.unravel_index(heatmap.argmin(), heatmap.shape)])


def test_overlay_resizes_a_heatmap_onto_a_larger_image():
    gray = np.full((96, 96), 128, dtype=np.uint8)
    rgb = overlay(gray, left_hot(), alpha=1.0)
    assert rgb.shape == (96, 96, 3)
    assert not np.array_equal(rgb[48, 5], rgb[48, 90])


def test_nan_and_out_of_range_heat_is_clipped_not_an_error():
    heatmap = left_hot()
    heatmap[0, 0], heatmap[1, 1], heatmap[-1, -1] = np.nan, 7.0, -3.0
    colours = overlay(noise_image(), heatmap, alpha=1.0)
    np.testing.assert_array_equal(colours[1, 1], colours[2, 2])        # above 1: as hot as 1
    np.testing.assert_array_equal(colours[-1, -1], colours[-2, -2])    # below 0: as cold as 0
    np.testing.assert_array_equal(colours[0, 0], colours[-2, -2])      # NaN: no evidence


def test_an_image_that_is_not_grayscale_is_a_clear_error():
    with pytest.raises(ValueError, match="expected a grayscale image"):
        overlay(np.zeros((4, SIZE, SIZE, 1)), left_hot())


def test_the_predict_page_image_is_the_padded_square_at_its_size_with_or_without_a_map():
    wide = np.full((60, 120), 200, dtype=np.uint8)  # a landscape upload: padded to square, not stretched
    plain = heatmap_image(wide, None, size=64)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    assert (plain[0] == plain[0, 0]).all() and not np.array_equal(plain[0, 0], plain[32, 32])  # padding rows
    coloured = heatmap_image(wide, left_hot(), alpha=1.0, size=64)
    assert not np.array_equal(coloured[32, 5], coloured[32, 58])


def test_drawing_the_overlay_does_not_load_tensorflow():
    # The server draws it at every slider move; importing TensorFlow there would cost seconds.
    code = ("import sys, numpy as np, cxr_core.heatmap as h; h.heatmap_image(np.zeros((40, 40), np.uint8), "
            "np.ones((8, 8), np.float32)); sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
