"""Colour a Grad-CAM heat map over an X-ray, without TensorFlow.

The dashboard's server draws the overlay (its opacity is a slider) while the
heat map itself is computed in the predictor process (cxr_core/predictor.py),
so this module must not import TensorFlow: the server would pay seconds for
it and hold the interpreter lock meanwhile. `predict --heatmap` (explain.write_heatmap) draws with it too.
"""

from __future__ import annotations

import functools

import numpy as np
import plotly.colors
from PIL import Image


@functools.lru_cache(maxsize=4)
def _colormap(name: str) -> np.ndarray:
    """256-entry RGB lookup table sampled once from a plotly colour scale."""
    colours = plotly.colors.sample_colorscale(name, np.linspace(0.0, 1.0, 256), colortype="tuple")
    return np.asarray(colours, dtype=np.float32) * 255.0


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
            colorscale: str = "Turbo") -> np.ndarray:
    """Blend a grayscale image (0..255) with a coloured heat map; returns RGB uint8 (S, S, 3).

    A heat map of another size (say, the model's input size over the original
    upload) is resized bilinearly to the image's size first.
    """
    base = np.asarray(gray, dtype=np.float32)
    if base.ndim == 3:
        base = base.mean(axis=-1)  # (S, S, 1) or an RGB copy of a grayscale X-ray
    if base.ndim != 2:
        raise ValueError(f"expected a grayscale image shaped (S, S) or (S, S, C), got {np.shape(gray)}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != base.shape:
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(base.shape[::-1], Image.BILINEAR))
    levels = np.rint(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255).astype(np.int64)
    colour = _colormap(colorscale)[levels]
    rgb = (1.0 - alpha) * np.clip(base, 0, 255)[..., None] + alpha * colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def heatmap_image(gray: np.ndarray, heatmap: np.ndarray | None, alpha: float = 0.4, size: int = 512) -> np.ndarray:
    """What the Predict page and `predict --heatmap` show: the image as the model sees it (padded
    square) at `size` pixels, with the Grad-CAM map blended in; RGB uint8 (size, size, 3)."""
    from .images import preprocess

    base = preprocess(np.asarray(gray, dtype=np.uint8), size)
    if heatmap is None:
        return np.repeat(base[..., None], 3, axis=-1)
    return overlay(base, heatmap, alpha)
