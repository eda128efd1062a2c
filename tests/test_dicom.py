"""Contract tests for cxr_core.dicom (through images.decode_image, which sends DICOM bytes there)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from dicom_files import bone_on_background, make_dicom
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from cxr_core.dicom import decode_dicom
from cxr_core.images import ImageDecodeError, decode_image, image_info, read_image_file


def refusal(data: bytes, name: str) -> str:
    with pytest.raises(ImageDecodeError) as error:
        decode_image(data, name)
    message = str(error.value)
    assert name in message
    return message


def test_decode_dicom_is_what_decode_image_gives_dicom_bytes():
    data = make_dicom(bone_on_background(bone=3800, background=200))
    assert np.array_equal(decode_dicom(data, "chest.dcm"), decode_image(data, "chest.dcm"))


def test_dicom_monochrome2_bone_is_bright():
    gray = decode_image(make_dicom(bone_on_background(bone=3800, background=200)), "chest.dcm")
    assert gray.shape == (64, 64) and gray.dtype == np.uint8
    assert gray[32, 32] == 255 and gray[0, 0] == 0


def test_dicom_monochrome1_is_inverted_so_bone_is_bright():
    data = make_dicom(bone_on_background(bone=200, background=3800), photometric="MONOCHROME1")
    gray = decode_image(data, "chest.dcm")
    assert gray[32, 32] == 255 and gray[0, 0] == 0


def test_dicom_rescale_and_window_are_applied():
    # Stored 0..2000 with intercept -1000 means real -1000..1000; a window of
    # centre 0, width 1000 shows -500..500: stored 1000 (real 0) is mid-grey.
    pixels = np.zeros((64, 64), np.uint16)
    pixels[:, 16:32], pixels[:, 32:48], pixels[:, 48:] = 400, 1000, 2000
    gray = decode_image(make_dicom(pixels, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1000))
    assert gray[0, 0] == 0 and gray[0, 20] == 0 and gray[0, 60] == 255
    assert abs(int(gray[0, 40]) - 128) <= 3


def test_preamble_less_dicom_is_recognised():
    ds = pydicom.dcmread(io.BytesIO(make_dicom(bone_on_background(3000, 100))))
    del ds.file_meta
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    assert buf.getvalue()[128:132] != b"DICM"
    gray = decode_image(buf.getvalue(), "old.dcm")
    assert gray[32, 32] == 255 and gray[0, 0] == 0


def test_dicom_named_png_is_read_and_reported_by_content(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(make_dicom(bone_on_background(3000, 100)))
    assert read_image_file(path).shape == (64, 64)
    assert image_info(path) == {"width": 64, "height": 64, "mode": "MONOCHROME2", "format": "DICOM"}


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless])
def test_dicom_with_undecodable_compression(syntax):
    message = refusal(make_dicom(bone_on_background(3000, 100), syntax=syntax), "ct.dcm")
    assert "not supported" in message and "uncompressed DICOM or PNG" in message


def test_dicom_without_pixel_data():
    assert "holds no image" in refusal(make_dicom(None), "report.dcm")


def test_dicom_with_sliver_shape_is_refused_before_decoding():
    assert "not a chest X-ray shape" in refusal(make_dicom(np.zeros((8, 4000), np.uint16)), "s.dcm")
