"""DICOM files made in memory for the image tests (test_images, test_dicom): none is committed.

A module, not a fixture, because test_images builds its fuzzing seeds from it at import time.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def make_dicom(pixels, photometric="MONOCHROME2", syntax=ExplicitVRLittleEndian, **elements) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.Modality = CR_STORAGE, "CR"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype("<u2").tobytes()
        if syntax.is_compressed:  # a frame that no codec can decode, encapsulated as the syntax requires
            ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(200)])
            ds["PixelData"].VR = "OB"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def bone_on_background(bone: int, background: int) -> np.ndarray:
    pixels = np.full((64, 64), background, np.uint16)
    pixels[16:48, 16:48] = bone
    return pixels
