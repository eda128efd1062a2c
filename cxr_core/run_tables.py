"""What pages and the CLI show about runs, as plain tables and dicts: the Train page's progress and
runs table (`runs`), Compare's metrics, curves and McNemar test (`compare`).

    run_records(store.list())  runs_table(store.list())  training_progress(run)  history_frame({label: run})
    metrics_table({label: evaluation})  metrics_text(table)  published_table()
    evaluation_choices(runs)  evaluation_label((split, source))
    same_images(predictions)  align_predictions(pred_a, pred_b)  mcnemar_between(...)
    confusion_cell(predictions, threshold, "FN")  image_root(run, evaluation)
    official_evaluation(run)  best_run(runs, data_dir)      (Home and `info`: the study at a glance)
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from .config import HEADLINE_METRICS, METRICS
from .reference import PUBLISHED
from .store import CALIBRATED, FINISHED, OWN, RunState, RunStore, calibration_of, split_source

# Confusion-matrix cells: (true label, predicted label) and what each means at the bedside.
CELLS = {
    "TN": (0, 0, "NORMAL called NORMAL (true negative)"),
    "FP": (0, 1, "NORMAL called PNEUMONIA (false alarm)"),
    "FN": (1, 0, "PNEUMONIA called NORMAL (missed pneumonia)"),
    "TP": (1, 1, "PNEUMONIA called PNEUMONIA (true positive)"),
}


def run_label(run) -> str:
    """Short, unique name for legends: the model, "(study recipe)" when it is, and the run id's suffix."""
    recipe = " (study recipe)" if run.recipe == "study" else ""
    return f"{run.model}{recipe} · {run.run_id.rsplit('-', 1)[-1]}"


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
    text = (f"epoch {epoch} of {epochs}{batch_text}" if epoch or batch_text
            else "preparing: decoding and caching the images")
    if run.settings.get("ensemble_size"):  # `train --ensemble K`: its members' epochs show on their own rows
        members, member = int(run.settings["ensemble_size"]), int(status.get("member") or 0)
        fraction, text = min(1.0, max(0, member - 1) / members), f"training member {member} of {members}"
    return {"epoch": epoch, "epochs": epochs, "batch": batch, "steps_per_epoch": steps,
            "fraction": fraction, "elapsed_s": elapsed, "remaining_s": remaining,
            "text": text,
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
            "run": run.run_id, "model": run.model, "recipe": run.recipe, "state": run.state,
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
            "run": run.run_id, "model": run.model, "recipe": run.recipe, "state": run.state,
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
    columns = ["run", "model", "recipe", "state", "epochs", *HEADLINE_METRICS, "minutes",
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
    """(split, source) pairs to compare runs on: the own test and validation splits and every other folder
    that at least one of `runs` was scored on (those first when the own test split was carved from train)."""
    folders = sorted({source for run in runs for source in run.evaluation_sources("test") if source != OWN})
    own = [("test", OWN), ("val", OWN)]
    scored = [("test", folder) for folder in folders]
    # A test split carved from train flatters every run: another labelled folder comes first when there is one.
    carved = runs and not all(own_test_is_official(run) for run in runs)
    return scored + own if carved and scored else own + scored


OCCLUSION_LABELS = {"lungs": "lung fields blacked out", "outside": "only the lung fields kept"}


def evaluation_label(choice: tuple[str, str], runs=()) -> str:
    """How pages and the CLI name (split, source). With `runs`, their own test split is called what it is:
    the test/ folder they were given (a Kaggle download's official split) when it is that for every one
    of them, else the test split carved from train."""
    split, source = choice
    base, occlusion = split_source(source)
    if base != OWN:
        label = f"folder {base}"
    elif split != "test":
        label = "own validation split"
    elif runs:
        official = all(own_test_is_official(run) for run in runs)
        label = "test/ folder (the official split)" if official else "test split carved from train"
    else:
        label = "own test split"
    calibration = calibration_of(source)
    if calibration:
        label += f", threshold from folder {calibration}"
    return f"{label}, {OCCLUSION_LABELS.get(occlusion, occlusion)}" if occlusion else label


def metrics_table(evaluations: dict) -> pd.DataFrame:
    """For {label: evaluation}: n, threshold, each metric and its 95% interval (metric_low, metric_high)."""
    rows = []
    for label, evaluation in evaluations.items():
        ci = evaluation.get("ci95") or {}
        row = {"run": label, "n": evaluation.get("n"), "threshold": evaluation.get("threshold"),
               "threshold from": evaluation.get("threshold_source", "validation")}
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


def threshold_sources(runs: dict, split: str, source: str) -> pd.DataFrame:
    """For {label: run}, one row per way the threshold was set when scoring `source`: the run's own
    (validation, or fixed) and each labelled folder it was site-calibrated on (`evaluate --threshold-from`).
    Empty when no run was site-calibrated there."""
    base = source.partition(CALIBRATED)[0]
    rows = []
    for label, run in runs.items():
        for key in run.evaluation_sources(split):
            if key != base and not (key.startswith(base + CALIBRATED) and split_source(key)[1] is None):
                continue
            evaluation = run.evaluation(split, key) or {}
            rows.append({"run": label, "threshold from": evaluation.get("threshold_source", "validation"),
                         "threshold": evaluation.get("threshold"),
                         **{m: evaluation.get(m) for m in ("accuracy", "sensitivity", "specificity", "macro_f1")}})
    table = pd.DataFrame(rows, columns=["run", "threshold from", "threshold", "accuracy", "sensitivity",
                                        "specificity", "macro_f1"])
    return table if (table["threshold from"].str.startswith("labelled folder")).any() else table.iloc[0:0]


def own_test_is_official(run) -> bool:
    """True when the run's own test split is its folder's test/ kept as it is (a Kaggle download's
    official test split, or the demo set's), False when it was carved from train (in-distribution)."""
    try:
        split = pd.read_csv(run.path / "split.csv", usecols=["split", "source_split"])
    except (OSError, ValueError):
        return False
    test = split[split["split"] == "test"]
    return not test.empty and bool((test["source_split"] == "test").all())


def official_evaluation(run) -> dict | None:
    """A run's stored scores on the official test split, with "source" and "where" added; None if none.

    A folder with its own test/ keeps it as the run's test split, so the run's own evaluation is the
    official one. A train-only copy carves its test split from train, which flatters every model: then
    the official figures are a scoring on another labelled folder (`evaluate --data`, the Compare
    page's "Score"), the one with the most images when there are several (the whole split over a half).
    """
    if own_test_is_official(run):
        evaluation = run.evaluation("test")
        return dict(evaluation, source=OWN, where="its folder's own test/ split") if evaluation else None
    scored = [(run.evaluation("test", source), source) for source in run.evaluation_sources("test")
              if source != OWN and split_source(source)[1] is None and calibration_of(source) is None]
    scored = [(evaluation, source) for evaluation, source in scored if evaluation]
    if not scored:
        return None
    evaluation, source = max(scored, key=lambda pair: pair[0].get("n") or 0)
    return dict(evaluation, source=source, where=f"folder {source}")


def _data_root(folder) -> str:
    """A data folder as training resolved it (through Kaggle's chest_xray/ nesting), for comparing."""
    from .config import UserError
    from .data import resolve_root

    try:
        return str(resolve_root(folder, require_train=False).resolve())
    except UserError:
        return os.path.realpath(folder)


def trained_on(run, data_dir) -> bool:
    """True when the run was trained on the folder `data_dir` (any folder when None)."""
    return data_dir is None or _data_root(run.settings.get("data_dir", "")) == _data_root(data_dir)


# How best_run chooses, in one line for Home and `info`.
BEST_RUN_RULE = ("chosen on validation: the highest validation AUC among finished runs on this data set "
                 "(ties: the default recipe), never on the test figures it shows")


def validation_auc(run) -> float | None:
    """The run's AUC on its own validation split, or None when it has none or trained on it (a
    study-recipe run trained on all of train sees its validation images, so their AUC chooses nothing)."""
    if run.settings.get("train_on_validation"):
        return None
    evaluation = run.evaluation("val") or {}
    return evaluation.get("auc")


def best_run(runs, data_dir=None) -> dict | None:
    """The finished run with the highest validation AUC (the default recipe breaks ties) that has figures
    on the official test split, among those trained on `data_dir` (any folder when None): the Home page's
    result and `info`'s "best_run". It is chosen on validation and shows test figures: choosing on the
    test split would show the luckiest draw on the very images it reports.

    None when no such run. The dict: run, model, label, synthetic, source, where, n, threshold, rule,
    validation_auc, the METRICS (on the official test split) and their ci95.
    """
    candidates = []
    for run in runs:
        if run.state != FINISHED or not trained_on(run, data_dir):
            continue
        chosen_on, evaluation = validation_auc(run), official_evaluation(run)
        if chosen_on is not None and evaluation:
            candidates.append((chosen_on, run.recipe == "improved", run, evaluation))
    if not candidates:
        return None
    chosen_on, _, run, evaluation = max(candidates, key=lambda c: c[:2])
    return {"run": run.run_id, "model": run.model, "label": run_label(run),
            "synthetic": bool(run.status.get("synthetic")), "source": evaluation["source"],
            "where": evaluation["where"], "n": evaluation.get("n"), "threshold": evaluation.get("threshold"),
            "rule": BEST_RUN_RULE, "validation_auc": chosen_on,
            **{m: evaluation.get(m) for m in METRICS}, "ci95": evaluation.get("ci95") or {}}


def image_root(run, evaluation: dict | None = None):
    """The folder that the image paths of `evaluation`'s predictions are relative to: the folder it was
    scored on, else the run's own data folder. Raises UserError when that folder is gone."""
    from .data import resolve_root  # here: listing runs (`python -m cxr_core runs`) stays light

    return resolve_root((evaluation or {}).get("data_dir") or run.settings.get("data_dir", ""), require_train=False)


def held_out_images(runs, manifest: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Images none of `runs` trained on, to pick from for a prediction: (rows with class_name and an
    absolute path, what they are). The active folder's official test/ when it has one (training never
    reads it); otherwise the images in every run's own recorded test split, since a split drawn here
    with another seed would hold images some run trained on."""
    official = manifest[manifest["source_split"] == "test"]
    if not official.empty:
        return official[["class_name", "path"]].assign(path=lambda t: t["path"].astype(str)), "the test/ folder"
    shared = None
    for run in runs:
        split = RunStore(run.path.parent).split(run.run_id)
        test = split[split["split"] == "test"]
        paths = {str(image_root(run) / p): c for p, c in zip(test["path"], test["class_name"])}
        shared = paths if shared is None else {p: c for p, c in shared.items() if p in paths}
    rows = pd.DataFrame({"class_name": list((shared or {}).values()), "path": list((shared or {}).keys())})
    return rows, ("the run's own test split" if len(runs) == 1 else "the test split every chosen run kept apart")
