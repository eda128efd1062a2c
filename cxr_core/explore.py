"""What the dashboard shows about a data set and about runs, computed here so pages only lay it out.

Data set (the Dataset explorer):

    scan = data.scan_folder(root); split = data.assign_splits(scan.manifest)
    dataset_summary(scan)               images per class and official folder, patients, skipped files
    class_balance(split)                per split: counts, and the accuracy of always answering PNEUMONIA
    images_per_patient(split)           how many patients have 1, 2, 3... images (why splits go by patient)
    naive_split_leakage(scan.manifest)  patients a random image-level split would put on two sides
    sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=12, seed=0)
    image_size_table(scan.manifest, n=300)        width, height, aspect from file headers
    class_appearance(scan.manifest, per_class=100) mean image and intensity histogram per class

Runs (the Train and Compare pages):

    runs_table(store.list())  training_progress(run)  history_frame({label: run})
    metrics_table({label: evaluation})  published_table()
    align_predictions(pred_a, pred_b)  confusion_cell(predictions, threshold, "FN")

Samples are drawn with a seed, so the same call shows the same images. Nothing
here imports TensorFlow: pixels come from `images` (the one decoder).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import images
from .config import CLASSES
from .data import SPLITS
from .reference import PUBLISHED
from .store import OWN, split_source

METRICS = ("accuracy", "sensitivity", "specificity", "macro_f1", "auc")
# Confusion-matrix cells: (true label, predicted label) and what each means at the bedside.
CELLS = {
    "TN": (0, 0, "NORMAL called NORMAL (true negative)"),
    "FP": (0, 1, "NORMAL called PNEUMONIA (false alarm)"),
    "FN": (1, 0, "PNEUMONIA called NORMAL (missed pneumonia)"),
    "TP": (1, 1, "PNEUMONIA called PNEUMONIA (true positive)"),
}


# ---------------------------------------------------------------- data set


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


# ---------------------------------------------------------------- runs


def run_label(run) -> str:
    """Short, unique name for legends: the model and the run id's random suffix."""
    return f"{run.model} · {run.run_id.rsplit('-', 1)[-1]}"


def training_progress(run, now: float | None = None) -> dict:
    """Epoch, batch, fraction done (0..1), elapsed and estimated remaining seconds of a run.

    The estimate uses the mean epoch time so far; None until one epoch is done.
    """
    now = time.time() if now is None else now
    status, history = run.status, run.history()
    epochs = int(run.settings.get("epochs") or 1)
    epoch = int(status.get("epoch") or 0)
    batch, steps = int(status.get("batch") or 0), int(status.get("steps_per_epoch") or 0)
    within = batch / steps if steps else 0.0
    fraction = min(1.0, (epoch + within) / epochs)
    started = status.get("started")
    end = status.get("finished") or now
    elapsed = max(0.0, end - started) if started else 0.0
    epoch_seconds = [h["seconds"] for h in history if h.get("seconds")]
    remaining = None
    if epoch_seconds and run.state == "running":
        remaining = max(0.0, (epochs - epoch - within) * float(np.mean(epoch_seconds)))
    return {"epoch": epoch, "epochs": epochs, "batch": batch, "steps_per_epoch": steps,
            "fraction": fraction, "elapsed_s": elapsed, "remaining_s": remaining}


def runs_table(runs, split: str = "test") -> pd.DataFrame:
    """One row per run: state, model, settings, duration and headline metrics on `split`."""
    rows = []
    for run in runs:
        evaluation = run.evaluation(split) or {}
        settings, status = run.settings, run.status
        duration = status.get("duration")
        rows.append({
            "run": run.run_id, "model": run.model, "state": run.state,
            "epochs": f"{status.get('epoch') or 0}/{settings.get('epochs', '?')}",
            **{m: evaluation.get(m) for m in ("accuracy", "sensitivity", "specificity", "auc")},
            "minutes": round(duration / 60, 1) if duration else None,
            "image_size": settings.get("image_size"), "batch_size": settings.get("batch_size"),
            "learning_rate": settings.get("learning_rate"), "augment": settings.get("augment"),
            "class_weighting": settings.get("class_weighting"),
            "data": ("SYNTHETIC demo" if status.get("synthetic") else
                     os.path.basename(str(settings.get("data_dir", ""))) or "?"),
            "note": run.error or "",
        })
    columns = ["run", "model", "state", "epochs", "accuracy", "sensitivity", "specificity", "auc", "minutes",
               "image_size", "batch_size", "learning_rate", "augment", "class_weighting", "data", "note"]
    return pd.DataFrame(rows, columns=columns)


def history_frame(runs: dict) -> pd.DataFrame:
    """Long table (run, epoch, metric, phase, value) of training curves, for {label: run}."""
    rows = []
    for label, run in runs.items():
        for record in run.history():
            for key, value in record.items():
                if key in ("epoch", "seconds") or value is None:
                    continue
                phase, metric = ("validation", key[4:]) if key.startswith("val_") else ("training", key)
                rows.append({"run": label, "epoch": record["epoch"], "metric": metric, "phase": phase,
                             "value": value})
    return pd.DataFrame(rows, columns=["run", "epoch", "metric", "phase", "value"])


def evaluation_choices(runs) -> list[tuple[str, str]]:
    """(split, source) pairs to compare runs on: the own test and validation splits, then every
    other folder that at least one of `runs` was scored on."""
    folders = sorted({source for run in runs for source in run.evaluation_sources("test") if source != OWN})
    return [("test", OWN), ("val", OWN)] + [("test", folder) for folder in folders]


OCCLUSION_LABELS = {"lungs": "lung fields blacked out", "outside": "only the lung fields kept"}


def evaluation_label(choice: tuple[str, str]) -> str:
    split, source = choice
    base, occlusion = split_source(source)
    label = ("own test split" if split == "test" else "own validation split") if base == OWN else f"folder {base}"
    return f"{label}, {OCCLUSION_LABELS.get(occlusion, occlusion)}" if occlusion else label


def metrics_table(evaluations: dict) -> pd.DataFrame:
    """For {label: evaluation}: n, threshold, each metric and its 95% interval (metric_low, metric_high)."""
    rows = []
    for label, evaluation in evaluations.items():
        ci = evaluation.get("ci95") or {}
        row = {"run": label, "n": evaluation.get("n"), "threshold": evaluation.get("threshold")}
        for metric in METRICS:
            low_high = ci.get(metric) or (None, None)
            row.update({metric: evaluation.get(metric), f"{metric}_low": low_high[0], f"{metric}_high": low_high[1]})
        rows.append(row)
    return pd.DataFrame(rows)


def published_table() -> pd.DataFrame:
    """Published results on the official test split (reference.PUBLISHED), one row each."""
    return pd.DataFrame(PUBLISHED, columns=["name", "source", *METRICS]).astype({m: float for m in METRICS})


def same_images(predictions: list[pd.DataFrame]) -> bool:
    """True when every prediction table covers the same image files (a fair comparison)."""
    sets = [frozenset(p["path"]) for p in predictions]
    return all(s == sets[0] for s in sets)


def align_predictions(pred_a: pd.DataFrame, pred_b: pd.DataFrame) -> pd.DataFrame:
    """The images both runs predicted: path, label, probability_a, probability_b."""
    a = pred_a[["path", "label", "probability"]].rename(columns={"probability": "probability_a"})
    b = pred_b[["path", "label", "probability"]].rename(columns={"probability": "probability_b", "label": "label_b"})
    merged = a.merge(b, on="path")
    return merged[merged["label"] == merged["label_b"]].drop(columns="label_b").reset_index(drop=True)


def mcnemar_between(pred_a: pd.DataFrame, pred_b: pd.DataFrame, threshold_a: float, threshold_b: float,
                    name_a: str, name_b: str) -> dict | None:
    """McNemar's test of two runs at their thresholds on the images both predicted; None if they share none."""
    from .evaluate import mcnemar_test

    both = align_predictions(pred_a, pred_b)
    if both.empty:
        return None
    return mcnemar_test(both["label"].to_numpy(), (both["probability_a"] >= threshold_a).astype(int).to_numpy(),
                        (both["probability_b"] >= threshold_b).astype(int).to_numpy(), name_a=name_a, name_b=name_b)


def confusion_cell(predictions: pd.DataFrame, threshold: float, cell: str) -> pd.DataFrame:
    """The images in one confusion-matrix cell ("TN", "FP", "FN", "TP") at `threshold`.

    Sorted so the most confident calls come first: for FP and FN those are the
    mistakes most worth looking at.
    """
    true_label, predicted, _ = CELLS[cell]
    called = (predictions["probability"] >= threshold).astype(int)
    rows = predictions[(predictions["label"] == true_label) & (called == predicted)]
    return rows.sort_values("probability", ascending=predicted == 0).reset_index(drop=True)
