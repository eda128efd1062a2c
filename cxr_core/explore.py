"""What the Dataset explorer shows about a data set, computed here so the page only lays it out; the
`info` and `explore` commands print the same.

    scan = data.scan_folder(root); split = data.assign_splits(scan.manifest)
    dataset_summary(scan)               images per class and official folder, patients, skipped files
    dataset_report(scan, split)         all of the below that is cheap, as plain data (`info`, `explore`)
    class_balance(split)                per split: counts, and the accuracy of always answering PNEUMONIA
    images_per_patient(split)           how many patients have 1, 2, 3... images (why splits go by patient)
    naive_split_leakage(scan.manifest)  patients a random image-level split would put on two sides
    leakage_findings(...)               the leakage check as sentences
    sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=12, seed=0)
    image_size_table(scan.manifest, n=300)        width, height, aspect from file headers
    class_appearance(scan.manifest, per_class=100) mean image and intensity histogram per class

What pages show about runs is in `run_tables`. Samples are drawn with a seed, so
the same call shows the same images. Nothing here imports TensorFlow: pixels
come from `images` (the one decoder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import data, images
from .config import CLASSES
from .data import SPLITS


def dataset_summary(scan) -> dict:
    """Headline counts of a scanned folder: what the Home page and `info` print."""
    manifest = scan.manifest
    return {
        "root": str(scan.root),
        "synthetic": bool(scan.synthetic),
        "images": int(len(manifest)),
        "patients": int(manifest["patient_id"].nunique()),
        "classes": {c: int((manifest["class_name"] == c).sum()) for c in CLASSES},
        "official_splits": {s: int((manifest["source_split"] == s).sum()) for s in SPLITS},
        "skipped": dict(scan.skipped),
    }


def class_balance(split_manifest: pd.DataFrame) -> pd.DataFrame:
    """Per split (and all): images per class, patients, and the accuracy of always answering PNEUMONIA.

    That accuracy is the bar any model must clear: on a 3:1 set a model that
    never looks at the image already scores 0.75.
    """
    rows = []
    for name in (*SPLITS, "all"):
        part = split_manifest if name == "all" else split_manifest[split_manifest["split"] == name]
        if part.empty:
            continue
        pneumonia = int((part["label"] == 1).sum())
        rows.append({
            "split": name, "images": len(part), "patients": int(part["patient_id"].nunique()),
            "NORMAL": len(part) - pneumonia, "PNEUMONIA": pneumonia,
            "always_pneumonia_accuracy": pneumonia / len(part),
            "majority_accuracy": max(pneumonia, len(part) - pneumonia) / len(part),
        })
    return pd.DataFrame(rows)


def images_per_patient(split_manifest: pd.DataFrame) -> pd.DataFrame:
    """(class_name, images_per_patient, patients): 40 PNEUMONIA patients have 2 images, and so on."""
    per_patient = split_manifest.groupby(["class_name", "patient_id"]).size().rename("images_per_patient")
    table = per_patient.reset_index().groupby(["class_name", "images_per_patient"]).size().rename("patients")
    return table.reset_index()


def naive_split_leakage(manifest: pd.DataFrame, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, int]:
    """Patients on two sides if images were split at random (what data.assign_splits avoids)."""
    rng = np.random.default_rng(seed)
    split = rng.choice(SPLITS, size=len(manifest), p=list(fractions))
    groups = {s: set(manifest["patient_id"][split == s]) for s in SPLITS}
    return {f"{a}/{b}": len(groups[a] & groups[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}


# How much a leakage finding matters. Words of the domain, not of a user interface: the Dataset page
# picks its own style for each, the CLI prefixes a LEAKAGE finding with "error:".
LEAKAGE, PASSED, NOTE = "leakage", "passed", "note"


def leakage_findings(leakage: list[dict], naive: dict[str, int]) -> list[tuple[str, str]]:
    """data.leakage_report() and naive_split_leakage() as (severity, sentence) pairs, severity LEAKAGE,
    PASSED or NOTE: what the Dataset page shows and `info` prints."""
    summary = ", ".join(f"{row['pair']} {row['shared_ids']}" for row in leakage)
    if any(row["leakage"] for row in leakage):
        findings = [(LEAKAGE, f"Patients in two splits: {summary}.")]
    elif all(row["shared_ids"] == 0 for row in leakage):
        findings = [(PASSED, f"Leakage check passed: no patient appears in two splits ({summary}).")]
    else:
        findings = [(PASSED, "Leakage check passed for the splits carved here: "
                     + ", ".join(f"{row['pair']} {row['shared_ids']}" for row in leakage if row["exact"]) + "."),
                    (NOTE, ", ".join(f"{row['pair']}: {row['shared_ids']}" for row in leakage if not row["exact"])
                     + ". " + data.OVERLAP_UNCERTAIN)]
    findings.append((NOTE, "A random split by image instead would share "
                     + ", ".join(f"{v} patients between {k}" for k, v in naive.items()) + "."))
    return findings


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=min(n, len(frame)), random_state=seed) if len(frame) else frame


def sample_gallery(split_manifest: pd.DataFrame, *, split: str | None = None, class_name: str | None = None,
                   kind: str | None = None, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample of images matching the filters (None = any), with file name and sizes.

    Adds file_name, file_kb, width and height (from the header; NaN when unreadable).
    """
    part = split_manifest
    for column, value in (("split", split), ("class_name", class_name), ("kind", kind)):
        if value is not None and column in part:
            part = part[part[column] == value]
    sample = _sample(part, n, seed).copy()
    infos = [_header(p) for p in sample["path"]]
    sample["file_name"] = [os.path.basename(p) for p in sample["path"]]
    sample["file_kb"] = [_size_kb(p) for p in sample["path"]]
    sample["width"] = [i.get("width", np.nan) for i in infos]
    sample["height"] = [i.get("height", np.nan) for i in infos]
    return sample.reset_index(drop=True)


def _header(path) -> dict:
    try:
        return images.image_info(path)
    except images.ImageDecodeError:
        return {}


def _size_kb(path) -> float:
    try:
        return round(os.path.getsize(path) / 1024, 1)
    except OSError:
        return np.nan


def image_size_table(manifest: pd.DataFrame, n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Width, height, aspect (width / height), mode and format of a sample, read from headers only.

    Unreadable files are left out: the table is about the images that can be used.
    """
    rows = []
    for row in _sample(manifest, n, seed).itertuples():
        info = _header(row.path)
        if info:
            rows.append({"path": row.path, "class_name": row.class_name, "width": info["width"],
                         "height": info["height"], "aspect": info["width"] / info["height"],
                         "mode": info["mode"], "format": info["format"]})
    return pd.DataFrame(rows, columns=["path", "class_name", "width", "height", "aspect", "mode", "format"])


@dataclass
class ClassAppearance:
    """What one class looks like on average, over a sample."""

    mean_image: np.ndarray  # (S, S) uint8: the images as the model sees them, averaged
    histogram: np.ndarray  # (256,) float: share of pixels at each gray level, averaged per image
    images: int  # images averaged
    failed: int  # images that could not be decoded


def class_appearance(manifest: pd.DataFrame, *, per_class: int = 100, image_size: int = 128,
                     seed: int = 0) -> dict[str, ClassAppearance]:
    """Mean image and pixel-intensity histogram per class over a seeded sample.

    The mean image is over `images.preprocess` output (padded square, as the
    model sees it). The histogram is over the decoded image before padding, so
    the black padding of non-square films does not pile up at gray level 0;
    each image counts once whatever its size.
    """
    result = {}
    for class_name in CLASSES:
        sample = _sample(manifest[manifest["class_name"] == class_name], per_class, seed)
        total = np.zeros((image_size, image_size), np.float64)
        histogram = np.zeros(256, np.float64)
        used = failed = 0
        for path in sample["path"]:
            try:
                gray = images.read_image_file(path, target_size=image_size)
            except images.ImageDecodeError:
                failed += 1
                continue
            total += images.preprocess(gray, image_size)
            histogram += np.bincount(gray.ravel(), minlength=256) / gray.size
            used += 1
        mean = np.rint(total / max(used, 1)).astype(np.uint8)
        result[class_name] = ClassAppearance(mean, histogram / max(used, 1), used, failed)
    return result


