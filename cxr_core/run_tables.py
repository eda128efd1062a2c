"""What pages and the CLI show about runs, as plain tables and dicts: the Train page's progress and
runs table (`runs`), Compare's metrics, curves and McNemar test (`compare`).

    run_records(store.list())  runs_table(store.list())  training_progress(run)  history_frame({label: run})
    metrics_table({label: evaluation})  metrics_text(table)  published_table()
    evaluation_choices(runs)  evaluation_label((split, source))
    same_images(predictions)  align_predictions(pred_a, pred_b)  mcnemar_between(...)
    confusion_cell(predictions, threshold, "FN")  image_root(run, evaluation)
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from .config import HEADLINE_METRICS, METRICS
from .reference import PUBLISHED
from .store import OWN, RunState, split_source

# Confusion-matrix cells: (true label, predicted label) and what each means at the bedside.
CELLS = {
    "TN": (0, 0, "NORMAL called NORMAL (true negative)"),
    "FP": (0, 1, "NORMAL called PNEUMONIA (false alarm)"),
    "FN": (1, 0, "PNEUMONIA called NORMAL (missed pneumonia)"),
    "TP": (1, 1, "PNEUMONIA called PNEUMONIA (true positive)"),
}


def run_label(run) -> str:
    """Short, unique name for legends: the model and the run id's random suffix."""
    return f"{run.model} · {run.run_id.rsplit('-', 1)[-1]}"


def format_duration(seconds: float) -> str:
    """4m 05s, 1h 02m: how pages and the CLI show a duration."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def training_progress(run, now: float | None = None) -> dict:
    """Epoch, batch, fraction done (0..1), elapsed and estimated remaining seconds of a run, and the
    same as text ("text", "elapsed", "remaining"): the Train page's progress bar and `runs`.

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
    if epoch_seconds and run.state == RunState.RUNNING:
        remaining = max(0.0, (epochs - epoch - within) * float(np.mean(epoch_seconds)))
    batch_text = f", batch {batch} of {steps}" if steps else ""
    return {"epoch": epoch, "epochs": epochs, "batch": batch, "steps_per_epoch": steps,
            "fraction": fraction, "elapsed_s": elapsed, "remaining_s": remaining,
            "text": (f"epoch {epoch} of {epochs}{batch_text}" if epoch or batch_text
                     else "preparing: decoding and caching the images"),
            "elapsed": format_duration(elapsed),
            "remaining": "after epoch 1" if remaining is None else format_duration(remaining)}


def run_records(runs, split: str = "test") -> list[dict]:
    """One dict per run, as `runs --json` prints it: state, epochs, headline test metrics, the folders
    it was scored on, and for a running run the Train page's progress line."""
    records = []
    for run in runs:
        evaluation = run.evaluation(split) or {}
        progress = training_progress(run) if run.state == RunState.RUNNING else None
        records.append({
            "run": run.run_id, "model": run.model, "state": run.state,
            "epoch": run.status.get("epoch"), "epochs": run.settings.get("epochs"),
            "auc": evaluation.get("auc"), "accuracy": evaluation.get("accuracy"), "error": run.error,
            "evaluated_on": run.evaluation_sources(split), "synthetic": bool(run.status.get("synthetic")),
            "progress": f"{progress['text']}, {progress['elapsed']} elapsed" if progress else None,
        })
    return records


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
            **{m: evaluation.get(m) for m in HEADLINE_METRICS},
            "minutes": round(duration / 60, 1) if duration else None,
            "image_size": settings.get("image_size"), "batch_size": settings.get("batch_size"),
            "learning_rate": settings.get("learning_rate"), "augment": settings.get("augment"),
            "class_weighting": settings.get("class_weighting"),
            "data": ("SYNTHETIC demo" if status.get("synthetic") else
                     os.path.basename(str(settings.get("data_dir", ""))) or "?"),
            "note": run.error or "",
        })
    columns = ["run", "model", "state", "epochs", *HEADLINE_METRICS, "minutes",
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


def metrics_text(table: pd.DataFrame) -> pd.DataFrame:
    """metrics_table() as shown on Compare and printed by `compare`: "value [low, high]" per metric."""
    from .evaluate import with_interval  # scipy.stats: only what shows metrics pays for it

    def cell(value, low, high) -> str:
        missing = low is None or pd.isna(low) or high is None or pd.isna(high)
        return with_interval(None if value is None or pd.isna(value) else value, None if missing else (low, high))

    shown = pd.DataFrame({"run": table["run"], "images": table["n"],
                          "threshold": [f"{t:.3f}" if t is not None and not pd.isna(t) else "n/a"
                                        for t in table["threshold"]]})
    for metric in METRICS:
        shown[metric] = [cell(*values) for values in
                         zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]
    return shown


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


def image_root(run, evaluation: dict | None = None):
    """The folder that the image paths of `evaluation`'s predictions are relative to: the folder it was
    scored on, else the run's own data folder. Raises UserError when that folder is gone."""
    from .data import resolve_root  # here: listing runs (`python -m cxr_core runs`) stays light

    return resolve_root((evaluation or {}).get("data_dir") or run.settings.get("data_dir", ""), require_train=False)
