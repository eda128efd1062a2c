"""What both image decoders (images.py for Pillow's formats, dicom.py for DICOM) share: the error a person
sees, the size and shape limits checked from the header before any pixel is decoded, and the mapping of
a wide pixel range onto 8-bit gray."""

from __future__ import annotations

import numpy as np

from .config import UserError

MAX_FILE_BYTES = 64 * 1024 * 1024  # a 3000 px DICOM is ~18 MB; more is not an X-ray upload
MAX_PIXELS = 40_000_000  # ~6300 x 6300; checked from the header, before any decoding
MIN_SIDE = 32  # smaller than any model input: upsampling it would only show blur
MAX_ASPECT = 6.0  # chest films are near square; a 6:1 sliver is a crop or a banner


class ImageDecodeError(UserError, ValueError):
    """A file that cannot be used as a chest X-ray; the one-line message names it and says what to do.

    A UserError, so the CLI and the pages show it like any other; a ValueError for generic callers."""


def check_shape(width: int, height: int, name: str) -> None:
    """Refuse from the dimensions alone, before a single pixel is decoded."""
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"{name}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit - downscale it to 4000 px a side")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDecodeError(
            f"{name}: {width}x{height} is not a chest X-ray shape (sides over {MAX_ASPECT:g}:1) - upload the whole image")
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(
            f"{name}: {width}x{height} pixels is too small (at least {MIN_SIDE} a side) - upload the full-size X-ray")



def stretch(arr: np.ndarray) -> np.ndarray:
    """Map the finite min..max linearly onto 0..255 (NaN and inf go to the ends)."""
    arr = arr.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros(arr.shape, np.uint8)
    arr = np.clip(np.nan_to_num(arr, nan=low, posinf=high, neginf=low), low, high)
    return np.rint((arr - low) * (255.0 / (high - low))).astype(np.uint8)
