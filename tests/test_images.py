"""Contract tests for cxr_core.images: every input is generated here, none is committed."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from dicom_files import bone_on_background, make_dicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from cxr_core import images
from cxr_core.config import UserError
from cxr_core.images import ImageDecodeError, decode_image, image_info, load_for_model, preprocess, read_image_file


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def halves(size=(64, 64), mode="L", left=255, right=0) -> Image.Image:
    """Left half one colour, right half another: lets a test see where pixels went."""
    img = Image.new(mode, size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb without the memory."""
    data = bytearray(encode(Image.new("L", (64, 64)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- refusals: each names the file, says what is wrong and what to do -----------------

def refusal(data: bytes, name: str = "upload.jpg", **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, name, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and " - " in message
    return message


def test_error_is_a_user_error_and_a_value_error():
    assert issubclass(ImageDecodeError, UserError) and issubclass(ImageDecodeError, ValueError)


def test_empty_bytes_and_empty_file(tmp_path):
    assert "empty" in refusal(b"")
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        read_image_file(path)


def test_text_with_an_image_extension(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("patient 12, follow-up in two weeks\n")
    with pytest.raises(ImageDecodeError, match=r"not an image \(the bytes are text\)") as info:
        read_image_file(path)
    assert str(info.value).startswith(str(path))


def test_truncated_jpeg_is_refused_not_half_decoded():
    data = encode(Image.effect_noise((256, 256), 64).convert("L"), "JPEG", quality=90)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    assert "truncated or corrupt" in refusal(data[: len(data) // 2])


@pytest.mark.parametrize("width,height", [(20000, 20000), (10000, 10000), (8000, 6000)])
def test_huge_png_refused_from_its_header_with_bounded_memory(width, height):
    # 20000^2 trips Pillow's DecompressionBombError, 10000^2 its warning, 8000x6000 only our limit.
    tracemalloc.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = refusal(png_claiming_size(width, height), "big.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "limit" in message or "pixels" in message
    assert peak < 20 * 2**20
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_one_pixel_image_is_refused():
    assert "too small" in refusal(encode(Image.new("L", (1, 1)), "PNG"))


def test_sliver_is_refused():
    assert "not a chest X-ray shape" in refusal(encode(Image.new("L", (4000, 12)), "PNG"))


def test_file_larger_than_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(encode(Image.new("L", (64, 64)), "PNG"))
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 16)
    with pytest.raises(ImageDecodeError, match="over"):
        read_image_file(path)


def test_missing_file_and_folder_name_the_path(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found") as info:
        read_image_file(tmp_path / "nope.jpeg")
    assert "nope.jpeg" in str(info.value)
    with pytest.raises(ImageDecodeError, match="folder"):
        read_image_file(tmp_path)


def test_non_bytes_input_is_an_image_decode_error():
    with pytest.raises(ImageDecodeError):
        decode_image("not bytes", "x")  # type: ignore[arg-type]


# --- formats and modes ---------------------------------------------------------------

def assert_left_bright_right_dark(gray: np.ndarray, tolerance=8):
    assert gray.ndim == 2 and gray.dtype == np.uint8 and gray.flags.writeable
    width = gray.shape[1]
    assert gray[:, : width // 2 - 4].min() >= 255 - tolerance
    assert gray[:, width // 2 + 4 :].max() <= tolerance


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "GIF"])
def test_lossless_formats_round_trip(fmt):
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert_left_bright_right_dark(decode_image(encode(halves(), fmt, **options), "x"), tolerance=0)


def test_every_file_ending_accepted_is_a_format_that_is_read(tmp_path):
    """The upload box and the folder scan accept FILE_SUFFIXES; each ending's format decodes, so no
    accepted file is refused for its type, and the refusal of anything else names every format."""
    from cxr_core import data

    blobs = {name: make_dicom(bone_on_background(3000, 100)) if name == "DICOM" else encode(halves(), name.upper())
             for name in images.FORMATS}
    for name, suffixes in images.FORMATS.items():
        for suffix in suffixes:
            path = tmp_path / "train" / "NORMAL" / f"IM-{len(list(tmp_path.rglob('*.*'))):04d}-0001{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blobs[name])
            assert read_image_file(path).ndim == 2
    (tmp_path / "train" / "PNEUMONIA").mkdir()
    (tmp_path / "train" / "PNEUMONIA" / "person1_virus_1.jpeg").write_bytes(blobs["JPEG"])
    (tmp_path / "train" / "NORMAL" / "IM-9999-0001.txt").write_text("notes")
    scanned = data.scan_folder(tmp_path).manifest
    assert sorted(os.path.splitext(p)[1] for p in scanned.path if "NORMAL" in p) == sorted(images.FILE_SUFFIXES)
    message = refusal(bytes(range(256)) * 8, "blob.bin")
    assert all(name in message for name in images.FORMATS), message


def test_rgb_jpeg_becomes_grayscale():
    assert_left_bright_right_dark(decode_image(encode(halves(mode="RGB", left=(255,) * 3), "JPEG", quality=95)))


def test_cmyk_jpeg():
    img = halves(mode="CMYK", left=(0, 0, 0, 0), right=(0, 0, 0, 255))  # white | black ink
    assert_left_bright_right_dark(decode_image(encode(img, "JPEG", quality=95)), tolerance=12)


def test_16_bit_png_is_scaled_by_its_real_range_not_clipped():
    pixels = np.tile(np.linspace(1000, 3000, 64).astype(np.uint16), (64, 1))
    data = encode(Image.fromarray(pixels), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    gray = decode_image(data)
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray[0].astype(int)) >= 0) and len(np.unique(gray)) > 50


def test_rgba_png_is_composited_on_black():
    img = Image.new("RGBA", (64, 64), (255, 255, 255, 0))  # transparent white...
    img.paste((255, 255, 255, 255), (0, 0, 32, 64))  # ...except an opaque white left half
    assert_left_bright_right_dark(decode_image(encode(img, "PNG")), tolerance=0)


def test_palette_png():
    assert_left_bright_right_dark(decode_image(encode(halves(mode="RGB", left=(255,) * 3).convert("P"), "PNG")), 0)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("L", (64, 64), 255), Image.new("L", (64, 64), 0)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert decode_image(data).min() == 255


def test_png_named_jpeg_is_read_by_content(tmp_path):
    path = tmp_path / "person1_virus_1.jpeg"
    path.write_bytes(encode(halves(), "PNG"))
    assert_left_bright_right_dark(read_image_file(path), tolerance=0)


def test_exif_orientation_is_applied():
    img = halves(size=(200, 100))  # left (bright) half of a landscape image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the left edge becomes the top
    data = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    gray = decode_image(data)
    assert gray.shape == (200, 100)  # (height, width): 100 wide, 200 tall
    assert gray[:90].mean() > 240 and gray[110:].mean() < 15


def test_large_jpeg_is_drafted_to_the_target_size():
    img = Image.effect_noise((3000, 2500), 40).convert("L")
    data = encode(img, "JPEG", quality=85)
    gray = decode_image(data, "big.jpeg", target_size=224)
    assert min(gray.shape) >= 224 and max(gray.shape) <= 3000 // 4  # a DCT-scaled decode: never the full frame
    assert decode_image(data).shape == (2500, 3000)  # no hint: full size


# --- hostile bytes: an array or an ImageDecodeError, nothing else -----------------------

SEEDS = [
    encode(halves(size=(40, 40)), "PNG"),
    encode(halves(size=(40, 40)), "JPEG"),
    make_dicom(bone_on_background(3000, 100)[:40, :40]),
]


def assert_array_or_decode_error(data: bytes):
    try:
        gray = decode_image(data, "fuzz.bin", target_size=32)
    except ImageDecodeError as exc:
        assert "\n" not in str(exc)
    else:
        assert gray.ndim == 2 and gray.dtype == np.uint8


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_else(data):
    assert_array_or_decode_error(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_images_never_raise_anything_else(seed, edits, cut):
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    assert_array_or_decode_error(bytes(data[: cut % len(data)] if cut is not None else data))


# --- preprocessing -------------------------------------------------------------------

def test_preprocess_shape_and_dtype():
    out = preprocess(np.full((300, 200), 90, np.uint8), 96)
    assert out.shape == (96, 96) and out.dtype == np.uint8 and out.flags.writeable


def test_preprocess_pads_to_square_instead_of_stretching():
    tall_white = np.full((200, 50), 255, np.uint8)  # 4:1 tall: becomes 16 wide of 64
    out = preprocess(tall_white, 64)
    assert out[:, :22].max() == 0 and out[:, -22:].max() == 0  # left/right are padding
    assert out[:, 26:38].min() == 255 and out[0, 32] == 255 and out[-1, 32] == 255  # full height, centred


def test_preprocess_rejects_what_decode_image_never_returns():
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10), np.float32), 32)


def test_load_for_model_from_bytes_and_from_path_agree(tmp_path):
    data = encode(Image.effect_noise((120, 90), 50).convert("L"), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    from_bytes, from_path = load_for_model(data, 48, name="x.png"), load_for_model(path, 48)
    assert from_bytes.shape == (48, 48, 1) and from_bytes.dtype == np.uint8
    np.testing.assert_array_equal(from_bytes, from_path)


def test_image_info_reads_the_header_only(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    path.write_bytes(encode(Image.new("RGB", (200, 100)), "JPEG", exif=exif.tobytes()))
    assert image_info(path) == {"width": 100, "height": 200, "mode": "RGB", "format": "JPEG"}
    (tmp_path / "bad.png").write_text("hello")
    with pytest.raises(ImageDecodeError, match="bad.png"):
        image_info(tmp_path / "bad.png")


def test_occlusion_blacks_out_the_lung_box_or_all_around_it():
    pixels = np.full((100, 100), 200, np.uint8)
    top, bottom, left, right = (round(f * 100) for f in images.LUNG_BOX)
    lungs, outside = images.occlude(pixels, "lungs"), images.occlude(pixels, "outside")
    assert (lungs[top:bottom, left:right] == 0).all() and lungs[0, 0] == 200
    assert (outside[top:bottom, left:right] == 200).all() and outside[0, 0] == 0 and outside[-1, -1] == 0
    assert images.occlude(pixels, None) is pixels
    with pytest.raises(UserError):
        images.occlude(pixels, "heart")
