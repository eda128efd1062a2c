"""The one image decoder (folder files and uploads alike) and the one preprocessing step.

Every file the project touches goes through here, so training, evaluation and
prediction see pixels prepared the same way:

    gray = decode_image(data, "upload.jpg")        # 2-D uint8, any size
    x = preprocess(gray, 224)                      # (224, 224) uint8, aspect kept
    x = load_for_model("chest.dcm", 224)           # both steps: (224, 224, 1) uint8

Formats are recognised from the content, never from the file name. Anything
that is not a usable chest image raises `ImageDecodeError`, whose message is
one line: the file, the problem, and what to do. Pixel scaling to [0, 1]
happens inside the models (a Rescaling layer), not here.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from .config import UserError
from .pixels import MAX_FILE_BYTES, MAX_PIXELS, ImageDecodeError, check_shape, stretch

# Every format read, with the file name endings a folder scan picks up and the upload box offers.
# Only formats a chest X-ray arrives in: fewer parsers means fewer ways for an upload to surprise
# us (and Pillow cannot mistake text for a TGA or an XPM). The content decides the format, not the name.
FORMATS = {"JPEG": (".jpeg", ".jpg"), "PNG": (".png",), "BMP": (".bmp",), "GIF": (".gif",),
           "TIFF": (".tif", ".tiff"), "WebP": (".webp",), "DICOM": (".dcm", ".dicom")}
FILE_SUFFIXES = tuple(suffix for suffixes in FORMATS.values() for suffix in suffixes)
_PIL_FORMATS = tuple(name.upper() for name in FORMATS if name != "DICOM")
_FIX = "upload a JPEG, PNG or DICOM file"


def decode_image(data: bytes, name: str = "image", *, target_size: int | None = None) -> np.ndarray:
    """Bytes of any of FORMATS -> 2-D uint8 grayscale array (H, W).

    target_size is a hint: JPEGs are decoded at a reduced scale whose short
    side is still at least target_size, which makes 3000 px files fast.
    Raises ImageDecodeError for every bad input, never another exception type.
    """
    name = " ".join(str(name).split()) or "image"  # keep messages on one line
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageDecodeError(f"{name}: expected the file's bytes, got {type(data).__name__} - {_FIX}")
    data = bytes(data)
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty - {_FIX}")
    if len(data) > MAX_FILE_BYTES:
        raise ImageDecodeError(f"{name}: the file is over {MAX_FILE_BYTES >> 20} MiB - export a smaller JPEG or PNG")
    try:
        with _quiet_decoders():
            if _is_dicom(data):
                return _dicom_decoder()(data, name)
            return _decode_pillow(data, name, target_size)
    except ImageDecodeError:
        raise
    except Exception as exc:  # a decoder bug or odd file must not reach the page as a traceback
        msg = f"{name}: the image could not be decoded ({type(exc).__name__}) - re-export it as PNG or JPEG"
        raise ImageDecodeError(msg) from exc


def read_image_file(path: str | os.PathLike, *, target_size: int | None = None) -> np.ndarray:
    """Read a file (never more than MAX_FILE_BYTES) and decode it; errors name the path."""
    return decode_image(read_file_bytes(path), str(path), target_size=target_size)


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes, never more than MAX_FILE_BYTES + 1; a missing or unreadable file is an ImageDecodeError."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)  # +1 tells "too large" apart from "exactly the limit"
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found - check the path") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"{path}: is a folder, not an image file - give the path of an image") from None
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read the file ({exc.strerror or exc}) - check its permissions") from None


# Part of every decoded-image cache key: bump it whenever preprocess() changes.
PREPROCESS_VERSION = "pad-square-autocontrast-v2"


# The lung fields as a fixed box in the padded square (top, bottom, left, right, as fractions):
# like Maguolo and Nanni (2021), who blacked out a fixed central region of each film and found
# that classifiers still told the classes apart, one box for every image, no segmentation.
# It covers both lung fields of a centred PA film from apex to diaphragm (and the heart).
LUNG_BOX = (0.12, 0.80, 0.15, 0.85)
# "lungs": the box is black (what is left is everything but the lungs);
# "outside": all but the box is black (only the lung fields are left).
OCCLUSIONS = ("lungs", "outside")


def occlude(pixels: np.ndarray, how: str | None) -> np.ndarray:
    """Black out the lung box ("lungs") or all around it ("outside") of a square image; None: unchanged."""
    if how is None:
        return pixels
    if how not in OCCLUSIONS:
        raise UserError(f"unknown occlusion {how!r}; use one of {', '.join(OCCLUSIONS)}")
    size = pixels.shape[0]
    top, bottom, left, right = (round(f * size) for f in LUNG_BOX)
    out = pixels.copy() if how == "lungs" else np.zeros_like(pixels)
    if how == "lungs":
        out[top:bottom, left:right] = 0
    else:
        out[top:bottom, left:right] = pixels[top:bottom, left:right]
    return out


def preprocess(gray: np.ndarray, image_size: int, occlusion: str | None = None) -> np.ndarray:
    """The one preprocessing step: pad to a centred black square (aspect kept), resize to image_size,
    and, for the shortcut test only, black out the lung box or all around it (`occlusion`).

    Resizing before padding gives the same picture as padding first, without a
    padded copy of a 3000 px image. Returns uint8 (image_size, image_size)."""
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 2 or gray.dtype != np.uint8 or min(gray.shape) == 0:
        raise ValueError(f"preprocess expects a 2-D uint8 image from decode_image, got {gray.dtype} {gray.shape}")
    height, width = gray.shape
    scale = image_size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # BILINEAR in Pillow widens its kernel when shrinking (area-like, no aliasing);
    # reducing_gap first box-reduces huge images, which is fast and as good.
    small = Image.fromarray(gray).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    # Stretch each film to its own 0.5%..99.5% range: exposure and contrast differ
    # between machines and hospitals, and the model should not learn them.
    small = ImageOps.autocontrast(small, cutoff=0.5)
    # Black padding: the film's surroundings are dark on these X-rays, and a
    # constant keeps the model from learning anything from the padding.
    canvas = Image.new("L", (image_size, image_size), 0)
    canvas.paste(small, ((image_size - new_w) // 2, (image_size - new_h) // 2))
    # np.array: a writable copy, callers may augment in place.
    return occlude(np.array(canvas, dtype=np.uint8), occlusion)


def load_for_model(source: bytes | str | os.PathLike, image_size: int, name: str | None = None,
                   occlusion: str | None = None) -> np.ndarray:
    """Decode (bytes or a path) and preprocess -> uint8 array (image_size, image_size, 1)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        gray = decode_image(source, name or "upload", target_size=image_size)
    else:
        gray = read_image_file(source, target_size=image_size)
    return preprocess(gray, image_size, occlusion)[..., np.newaxis]


def load_with_appearance(source: bytes | str | os.PathLike, image_size: int,
                         name: str | None = None) -> tuple[np.ndarray, dict]:
    """load_for_model's pixels, plus appearance() of the same file: what prediction needs."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "upload"
    else:
        data, name = read_file_bytes(source), str(source)
    gray = decode_image(data, name, target_size=image_size)
    return preprocess(gray, image_size)[..., np.newaxis], appearance(data, gray)


# A pixel is clearly coloured when its R, G and B differ by more than this (of 255):
# gray films saved as RGB JPEGs stay within a few levels of chroma noise.
CHROMA = 24
# Gray levels at or beyond these count as pure black or pure white.
DARKEST, BRIGHTEST = 5, 250


def appearance(data: bytes, gray: np.ndarray) -> dict:
    """Cheap facts for the out-of-distribution check (cxr_core.ood), before preprocess() stretches contrast.

    colour: fraction of clearly coloured pixels, read from the file's own colours (decode_image
    has already made `gray` gray); spread: gray levels between the 0.5th and 99.5th percentiles;
    extremes: fraction of pure black or pure white pixels. DICOM files report colour 0.
    """
    step = max(1, max(gray.shape) // 512)  # a subsample estimates these fractions as well as every pixel
    sample = gray[::step, ::step]
    low, high = np.percentile(sample, [0.5, 99.5])
    extremes = np.mean((sample <= DARKEST) | (sample >= BRIGHTEST))
    return {"colour": _colour_fraction(data), "spread": float(high - low), "extremes": float(extremes)}


def _colour_fraction(data: bytes) -> float:
    if _is_dicom(data):
        return 0.0
    try:
        with _quiet_decoders(), Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            if img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith(("I;", "F;")):
                return 0.0  # stored gray: no colour to find
            if img.format == "JPEG":
                img.draft("RGB", (128, 128))  # a small DCT-scaled decode is enough to count colours
            img.thumbnail((256, 256))
            rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    except Exception:
        return 0.0  # decode_image accepted these bytes; a failed colour probe must not refuse them
    return float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > CHROMA))


def image_info(path: str | os.PathLike) -> dict:
    """{"width", "height", "mode", "format"} from the header only (no pixel decoding);
    width and height as displayed, i.e. after the EXIF orientation."""
    try:
        with _quiet_decoders(), open(path, "rb") as f:
            head = f.read(132)
            f.seek(0)
            if _is_dicom(head):
                import pydicom  # lazy, as in dicom.decode_dicom

                ds = pydicom.dcmread(f, force=True, stop_before_pixels=True)
                return {"width": int(ds.Columns), "height": int(ds.Rows),
                        "mode": str(ds.get("PhotometricInterpretation", "")), "format": "DICOM"}
            with Image.open(f, formats=_PIL_FORMATS) as img:
                width, height = img.size
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # orientations that swap the sides
                    width, height = height, width
                return {"width": width, "height": height, "mode": img.mode, "format": img.format}
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found - check the path") from None
    except Exception as exc:
        raise ImageDecodeError(f"{path}: cannot read the image header ({type(exc).__name__}) - {_FIX}") from None


def _is_dicom(data: bytes) -> bool:
    if data[128:132] == b"DICM":
        return True
    # Preamble-less DICOM (old or hand-written files) starts straight with a
    # group 0002/0008 tag followed by an explicit VR or a short length.
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00") or data[3] != 0:
        return False
    vr, length = data[4:6], int.from_bytes(data[4:8], "little")
    return (vr.isalpha() and vr.isupper()) or length < min(len(data), 1024)


def _describe(data: bytes) -> str:
    """Say what the bytes look like, so "not an image" comes with a reason."""
    for magic, what in ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"<", "HTML or XML")):
        if data.lstrip().startswith(magic):
            return f"the bytes are {what}"
    head = data[:1024]
    text = head.decode("utf-8", "ignore")  # "ignore": a character cut at byte 1024 is still text
    if len(text.encode()) > 0.9 * len(head) and all(c.isprintable() or c.isspace() for c in text):
        return "the bytes are text"
    return f"unrecognised format; {', '.join(list(FORMATS)[:-1])} and {list(FORMATS)[-1]} are read"


@contextlib.contextmanager
def _quiet_decoders():
    """Make Pillow's DecompressionBombWarning an error (the file is refused) and silence the
    rest: "possibly corrupt EXIF" or pydicom's VR complaints are nothing a person can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _decode_pillow(data: bytes, name: str, target_size: int | None) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            f"{name}: the image has over {MAX_PIXELS:,} pixels - downscale it to 4000 px a side") from None
    except Exception:
        raise ImageDecodeError(f"{name}: not an image ({_describe(data)}) - {_FIX}") from None
    with img:
        check_shape(*img.size, name)
        if target_size and img.format == "JPEG":
            img.draft("L", (target_size, target_size))  # DCT scaling: keeps both sides >= target_size
        try:
            img.load()  # decode now, so a truncated file fails here instead of yielding half an image
        except Exception:
            raise ImageDecodeError(
                f"{name}: the {img.format} data is truncated or corrupt - re-export or re-download the file") from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:
            pass  # a broken EXIF block should not cost a readable image its use
        return _to_gray(img)


def _to_gray(img: Image.Image) -> np.ndarray:
    if img.mode in ("I", "F") or img.mode.startswith(("I;", "F;")):
        return stretch(np.asarray(img))  # 16-bit and float: map the real range, do not clip at 255
    if img.has_transparency_data:
        # Transparent pixels become black, the X-ray's background, not white.
        rgba = img.convert("RGBA")
        gray = np.asarray(rgba.convert("L"), dtype=np.uint16) * np.asarray(rgba.getchannel("A"), dtype=np.uint16)
        return ((gray + 127) // 255).astype(np.uint8)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # P, 1, CMYK, YCbCr...: Pillow's RGB path handles all of them
    return np.array(img.convert("L"), dtype=np.uint8)


def _dicom_decoder():
    from .dicom import decode_dicom  # lazy: only DICOM uploads pay for pydicom

    return decode_dicom
