"""Use a finished run: predict files or uploads, evaluate it on a split.

Prediction goes through `images.load_with_appearance`, the same decoder and
preprocessing that training used, and the run's stored threshold. Every result
says whether the image is like the run's training X-rays (`ood`): True, False
with a "warning" that says why, or None for runs trained before that check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import data as data_mod
from . import evaluate, images, ood, pipeline
from .config import CLASSES, TrainSettings, UserError
from .store import (
    OWN,
    RunStore,
    atomic_write_csv,
    atomic_write_json,
    calibrated_source,
    evaluation_files,
    folder_key,
    model_file,
    occluded_source,
    read_json,
)


@dataclass
class LoadedRun:
    """A run's model with what is needed to use it."""

    run_id: str
    model: object
    threshold: float
    image_size: int
    model_name: str
    forward: object = field(default=None, repr=False)  # the compiled model call, built on first use
    ood: ood.Detector | None = None  # None: a run trained before the out-of-distribution check


def load_run(run_id: str, store: RunStore) -> LoadedRun:
    run = store.get(run_id)
    model = store.load_model(run_id)
    settings = TrainSettings.from_dict(run.settings)
    return LoadedRun(run_id, model, store.threshold(run_id), settings.image_size, settings.model,
                     ood=ood.load(run.path))


def model_key(run_id: str, store: RunStore) -> str:
    """Changes when the run's model file is replaced: a cache key for loaded models."""
    path = model_file(store.run_path(run_id)) or store.run_path(run_id) / "model.keras"
    try:
        return f"{run_id}:{path.stat().st_mtime_ns}"
    except OSError:
        return f"{run_id}:missing"


def outputs(loaded: LoadedRun, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, S, S, 1) uint8 -> (P(pneumonia) per image, penultimate features (n, d)), from one forward pass.

    A compiled graph with a fixed signature: an eager call costs several times the
    arithmetic (DenseNet121: 1.2 s eager vs 0.08 s compiled per upload), and
    predict() adds its own per-call setup.
    """
    import tensorflow as tf

    if loaded.forward is None:
        size = loaded.image_size
        # Without a fitted check (imported and ensemble runs) the features are never read, and a
        # model without a final Dense at its top level (an ensemble) need not have any.
        extractor = ood.with_features(loaded.model)[0] if loaded.ood is not None else loaded.model
        loaded.forward = tf.function(
            lambda x: extractor(x, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32)],
        )
    answer = loaded.forward(tf.constant(batch, dtype=tf.float32))
    prob, features = answer if loaded.ood is not None else (answer, np.zeros((len(batch), 0)))
    return np.asarray(prob).reshape(-1), np.asarray(features).reshape(len(batch), -1)


def probabilities(loaded: LoadedRun, batch: np.ndarray) -> np.ndarray:
    """(n, S, S, 1) uint8 -> P(pneumonia) per image."""
    return outputs(loaded, batch)[0]


def classify(loaded: LoadedRun, pixels: np.ndarray, name: str, appearance: dict | None = None) -> dict:
    """Preprocessed pixels (S, S, 1) -> {"file", "label", "probability", "threshold", "in_distribution",
    and "warning" when not in distribution}. appearance: from images.load_with_appearance."""
    prob, features = outputs(loaded, pixels[None])
    result = {
        "file": name,
        "label": CLASSES[int(prob[0] >= loaded.threshold)],
        "probability": float(prob[0]),
        "threshold": loaded.threshold,
    }
    result.update(ood.judge(loaded.ood, features, pixels, appearance))
    return result


def predict_image(loaded: LoadedRun, source, name: str | None = None) -> dict:
    """One file path or bytes -> classify()'s result; raises ImageDecodeError."""
    pixels, appearance = images.load_with_appearance(source, loaded.image_size, name=name)
    return classify(loaded, pixels, _file_name(source, name), appearance)


def _file_name(source, name: str | None) -> str:
    """What a result calls its image: the name given, else the path; bytes without a name are "upload"."""
    if name:
        return name
    return "upload" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def analyse(loaded: LoadedRun, source, name: str | None = None) -> dict:
    """One file path or bytes -> classify()'s result plus "heatmap" ((S, S) in [0, 1], or None with
    "heatmap_error") and "model"; raises ImageDecodeError. What the Predict page shows, computed in
    the predictor process; `predict --heatmap` draws the same Grad-CAM (explain.write_heatmap)."""
    from . import explain

    pixels, appearance = images.load_with_appearance(source, loaded.image_size, name=name)  # decoded once, for both
    result = classify(loaded, pixels, _file_name(source, name), appearance)
    try:
        # Evidence for the call the model made at its own threshold, not at 0.5.
        result["heatmap"] = explain.gradcam(loaded.model, pixels, class_index=CLASSES.index(result["label"]))
    except ValueError as error:
        result["heatmap"], result["heatmap_error"] = None, str(error)
    result["model"] = loaded.model_name
    return result


def predict_files(loaded: LoadedRun, files: list[str]) -> list[dict]:
    results = []
    for file in files:
        try:
            results.append(predict_image(loaded, file, name=file))
        except images.ImageDecodeError as error:
            results.append({"file": file, "error": str(error)})
    return results


# What a person is shown instead of a label for an image unlike the run's training X-rays: any label
# for it would be meaningless. Machine-readable output (`predict --json`) keeps the model's call
# beside in_distribution=false, so a program can tell the two apart.
WITHHELD = "withheld"


def shown_label(result: dict) -> str:
    """The label a person sees for one prediction (predict_image's dict): WITHHELD when the
    out-of-distribution check refused the image, else the model's call at the run's threshold."""
    return WITHHELD if result.get("in_distribution") is False else result["label"]


def batch_row(file: str, run: str = "", result: dict | None = None, error: str = "") -> dict:
    """One row of a batch's results table (the Predict page's table and CSV): a prediction by `run`,
    or the `error` that kept `file` from every run."""
    if result is None:
        return {"file": file, "run": run, "label": "", "probability": None, "threshold": None, "error": error}
    return {"file": file, "run": run, "label": shown_label(result), "probability": result["probability"],
            "threshold": result["threshold"], "in_distribution": result["in_distribution"],
            "warning": result.get("warning", ""), "error": error}


def unique_names(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A batch's (name, content) pairs told apart: two uploads called image.jpg become image.jpg and
    image.jpg (2), so every row of a batch table names one file."""
    seen: dict[str, int] = {}
    named = []
    for name, content in files:
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name} ({seen[name]})", content))
    return named


def evaluate_run(run_id: str, split_name: str, store: RunStore, data_dir=None, *, recompute: bool = False,
                 occlusion: str | None = None, threshold_from=None) -> dict:
    """Evaluate a run on one split of its own data, or on another labelled folder.

    Without `data_dir` (or with the run's own data folder) the run's own split is
    scored and stored as its evaluation; the stored result is returned unless
    `recompute`. With another folder (ROOT/test/{NORMAL,PNEUMONIA}, or bare
    NORMAL/ and PNEUMONIA/ folders) every image of that split is scored, and the
    result is stored beside the run's own, under the folder's key. With
    `occlusion` ("lungs" or "outside", images.OCCLUSIONS) the images are scored
    with the lung box blacked out, or all but it, and stored apart under
    "<source>+occlude-<occlusion>": the shortcut test never replaces a plain evaluation.
    With `threshold_from` (a labelled folder, laid out like `data_dir`) the images are
    scored at the threshold that meets the run's target sensitivity on that folder
    (site calibration, calibration.site_threshold), stored under
    "<source>+threshold-from-<its key>"; refused when the two folders share an image or a patient.
    """
    if threshold_from is not None and occlusion:
        raise UserError("--threshold-from and --occlude go separately: score the occluded images at the run's threshold")
    run = store.get(run_id)
    if split_name not in data_mod.SPLITS:
        raise UserError(f"unknown split {split_name!r}; use one of {', '.join(data_mod.SPLITS)}")
    if occlusion not in (None, *images.OCCLUSIONS):
        raise UserError(f"unknown occlusion {occlusion!r}; use one of {', '.join(images.OCCLUSIONS)}")
    root = data_mod.resolve_root(data_dir, require_train=False) if data_dir is not None else None
    if root is not None and _is_own_data(run, root):
        root = None  # the run's own folder: its split (a Kaggle download's test/ is the official one)
    if root is None:
        stored = run.evaluation(split_name, occluded_source(OWN, occlusion))
        if stored is not None and not recompute and threshold_from is None:
            return stored  # a site threshold is a new scoring: never answered by the stored one
        part, root = _own_split(run, store, split_name)
        source = OWN
    else:
        manifest = data_mod.scan_folder(root, require_train=False).manifest
        part = manifest[manifest.source_split == split_name].assign(split=split_name)
        source = folder_key(run.path, split_name, root)
    source = occluded_source(source, occlusion)
    if part.empty:
        raise UserError(f"no {split_name!r} images for run {run_id} in {root}; pass --split with a split that folder holds")
    missing = [p for p in part["path"] if not os.path.exists(p)]
    if missing:
        raise UserError(f"{len(missing)} images of the {split_name} split are missing under {root}, e.g. {missing[0]}; "
                        "pass --data with the folder the run was trained on")
    loaded = load_run(run_id, store)
    choice = None
    if threshold_from is not None:
        choice = _site_threshold(run, loaded, threshold_from, split_name, part)
        source = calibrated_source(source, folder_key(run.path, split_name, choice["root"]))
    cache = pipeline.build_cache(part["path"].tolist(), loaded.image_size, occlusion=occlusion)
    part = pipeline.with_cache_rows(part, cache)
    prob = predict_rows(loaded.model, cache, part["row"])
    if choice is None:
        return write_evaluation(run.path, split_name, part, prob, loaded.threshold, root, source)
    return write_evaluation(run.path, split_name, part, prob, choice["threshold"], root, source,
                            threshold_source=f"labelled folder {Path(choice['root']).name}",
                            threshold_from={"data_dir": choice["root"], "n": choice["n"], "rule": choice["rule"],
                                            "sensitivity": choice["sensitivity"], "specificity": choice["specificity"]})


def _own_split(run, store: RunStore, split_name: str) -> tuple[pd.DataFrame, Path]:
    """The images of one split of the run's own data (absolute paths) and that folder."""
    if not run.settings.get("data_dir"):
        raise UserError(f"run {run.run_id} was imported, so it has no split of its own; pass --data with a "
                        "labelled folder to score it on (say, the official test split)")
    root = data_mod.resolve_root(run.settings.get("data_dir", ""))
    recorded = store.split(run.run_id)
    part = recorded[recorded.split == split_name].copy()
    part["path"] = [str(root / p) for p in part["path"]]
    return part, root


def _site_threshold(run, loaded: LoadedRun, folder, split_name: str, scored: pd.DataFrame) -> dict:
    """The threshold meeting the run's target sensitivity on the labelled `folder`, which must share no
    image (by content) with the `scored` images: calibrating on the images scored would flatter them."""
    from .calibration import site_threshold

    root = data_mod.resolve_root(folder, require_train=False)
    manifest = data_mod.scan_folder(root, require_train=False).manifest
    cal = manifest[manifest.source_split == split_name]
    cal = cal if not cal.empty else manifest
    shared = data_mod.shared_images(cal["path"], scored["path"])
    if shared:
        raise UserError(f"--threshold-from {root} shares {len(shared)} images with the scored folder (e.g. "
                        f"{shared[0]}): a threshold fitted on the images it scores flatters them; pass a labelled "
                        "folder of other images from the same site")
    patients = data_mod.shared_patients(cal, scored)
    if patients:
        raise UserError(f"--threshold-from {root} shares {len(patients)} patients with the scored images (e.g. "
                        f"{', '.join(patients[:3])}): another image of the same child leaks its answer; pass a "
                        "labelled folder of other children from the same site")
    if cal["label"].nunique() < 2:
        raise UserError(f"--threshold-from {root}: needs labelled images of both classes (NORMAL and PNEUMONIA)")
    cache = pipeline.build_cache(cal["path"].tolist(), loaded.image_size)
    cal = pipeline.with_cache_rows(cal, cache)
    target = TrainSettings.from_dict(run.settings).target_sensitivity
    choice = site_threshold(cal["label"].to_numpy(), predict_rows(loaded.model, cache, cal["row"]), target)
    return {**choice, "root": str(root), "n": int(len(cal))}


def predict_rows(model, cache, rows, batch_size: int = 64) -> np.ndarray:
    ds = pipeline.make_dataset(cache, rows, np.zeros(len(rows)), batch_size=batch_size, shuffle=False)
    probs = [np.asarray(model(x, training=False)).reshape(-1) for x, _ in ds]
    return np.concatenate(probs) if probs else np.zeros(0)


def write_evaluation(run_path, split_name: str, part, prob: np.ndarray, threshold: float, root,
                     source: str = OWN, *, threshold_source: str | None = None, threshold_from: dict | None = None) -> dict:
    """Score and store one split's predictions; intervals resample patients, not images.

    threshold_source: where the threshold came from; by default the run's own rule
    ("validation", or "fixed" for a threshold set in advance)."""
    result = evaluate.evaluate_predictions(part["label"].to_numpy(), prob, threshold,
                                           groups=part["patient_id"].to_numpy())
    result.update(run=run_path.name, split=split_name, data_dir=str(root), source=source,
                  threshold_source=threshold_source or _own_threshold_source(run_path))
    if threshold_from:
        result["threshold_from"] = threshold_from
    json_path, csv_path = evaluation_files(run_path, split_name, source)
    atomic_write_json(json_path, result)
    predictions = part[["path", "label", "patient_id", "kind"]].copy()
    predictions["path"] = [os.path.relpath(p, root) if os.path.isabs(p) else p for p in predictions["path"]]
    predictions["probability"] = prob
    predictions["predicted"] = (prob >= threshold).astype(int)
    atomic_write_csv(csv_path, predictions)
    return result


def _own_threshold_source(run_path) -> str:
    try:
        rule = (read_json(Path(run_path) / "threshold.json", {}) or {}).get("rule_name")
    except (OSError, ValueError, AttributeError):
        rule = None
    return {"fixed": "fixed", "site": "labelled folder"}.get(rule, "validation")


def _is_own_data(run, root: Path) -> bool:
    try:
        return data_mod.resolve_root(run.settings.get("data_dir", "")).resolve() == root.resolve()
    except UserError:  # the run's folder moved: any folder given is "another" one
        return False


def predictions(run_id: str, split_name: str, store: RunStore, source: str = OWN) -> pd.DataFrame | None:
    """The per-image predictions stored with an evaluation (None if there are none)."""
    path = evaluation_files(store.run_path(run_id), split_name, source)[1]
    return pd.read_csv(path) if path.is_file() else None
