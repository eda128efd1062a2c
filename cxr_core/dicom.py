"""The DICOM decoder behind images.decode_image: one X-ray frame from a DICOM file's bytes.

images.py sniffs the format and calls it; the checks both share live in pixels.py.
"""

from __future__ import annotations

import io

import numpy as np

from .pixels import ImageDecodeError, check_shape, stretch


def decode_dicom(data: bytes, name: str) -> np.ndarray:
    """DICOM bytes -> (H, W) uint8 gray, as a radiologist's viewer shows it (modality and VOI LUTs,
    MONOCHROME1 inverted, colour to luma); raises ImageDecodeError with what to do."""
    import pydicom
    from pydicom import uid
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        raise ImageDecodeError(f"{name}: looks like DICOM but cannot be parsed - re-export it from the viewer") from None
    if "PixelData" not in ds:
        raise ImageDecodeError(
            f"{name}: this DICOM file holds no image (no pixel data; perhaps a report) - upload the X-ray image itself")
    check_shape(int(ds.get("Columns") or 0), int(ds.get("Rows") or 0), name)
    if "TransferSyntaxUID" not in ds.file_meta:
        # Preamble-less files have no meta header: use the encoding pydicom found while reading.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian if implicit else (
            uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        ds.pixel_array_options(index=0)  # decode only the first frame of a multi-frame file
        arr = ds.pixel_array
    except Exception:
        if syntax.is_compressed:
            problem = f"DICOM compression '{syntax.name}' is not supported here"
        else:
            problem = "the DICOM pixel data cannot be read"
        raise ImageDecodeError(f"{name}: {problem} - export it as uncompressed DICOM or PNG") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:  # colour (pydicom hands YBR over as RGB): luma, as Pillow's "L"
        luma = arr[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]
        return np.rint(luma).astype(np.uint8) if arr.dtype == np.uint8 else stretch(luma)
    arr = apply_modality_lut(arr, ds)  # RescaleSlope/Intercept: stored values -> real units
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        try:
            arr = apply_voi_lut(arr, ds, index=0)  # the window the radiologist's viewer would use
        except Exception:
            pass  # a malformed window falls back to the image's own range
    gray = stretch(arr)
    # MONOCHROME1 stores bone as low values; invert so bone is bright, as on every other X-ray.
    return 255 - gray if photometric == "MONOCHROME1" else gray
