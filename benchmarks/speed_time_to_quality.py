"""Time to quality: the one definition the speed benchmark uses, as small pure functions.

DEFINITION below is what the README and speed.md print. Nothing here imports TensorFlow:
the rule is tested on synthetic histories (tests/test_benchmarks.py).
"""

from __future__ import annotations

import numpy as np

DEFINITION = (
    "Time to quality is the wall time from the training process's start until the end of the first epoch whose "
    "model reaches the target on the official test dev half (`../shared/data/chest_xray_test_dev`): accuracy and "
    "AUC both at least the target's. Each epoch's accuracy uses that side's own threshold rule, chosen on "
    "validation: 0.5 for the seed recipes; for ours the product's `cxr_core.evaluate.choose_threshold` on that "
    "epoch's validation predictions. The target is the seed regularized recipe's final-epoch accuracy and AUC on "
    "the dev half in the same repeat, so the seed side is timed by the same rule: its own first epoch that reaches "
    "its own final figures. Scoring each epoch on the dev half is the benchmark's, not the product's: its time is "
    "recorded separately and subtracted from every wall time, on both sides.")
METRICS = ("accuracy", "auc")


def dev_scores(labels, prob, threshold: float) -> dict:
    """Accuracy, sensitivity, specificity at `threshold` and AUC: the same code scores both sides."""
    from sklearn.metrics import roc_auc_score

    from cxr_core import evaluate

    labels, prob = np.asarray(labels).ravel(), np.asarray(prob, dtype=np.float64).ravel()
    at = evaluate.metrics_at_threshold(labels, prob, threshold)
    auc = float(roc_auc_score(labels, prob)) if 0 < labels.sum() < labels.size else None
    return {"threshold": float(threshold), "accuracy": at["accuracy"], "sensitivity": at["sensitivity"],
            "specificity": at["specificity"], "auc": auc, "n": int(labels.size)}


def exclude_evaluation(events: list[dict], launched: float) -> list[dict]:
    """Epoch rows with `wall_s`: seconds from `launched` to the epoch's end, less the evaluation before it.

    `events`: per epoch, in order, `ended` (time.time() when the epoch ended, before its evaluation)
    and `eval_s` (how long the benchmark's evaluation of that epoch took), plus any scores.
    """
    rows, spent = [], 0.0
    for event in events:
        rows.append(dict(event, wall_s=round(event["ended"] - launched - spent, 3)))
        spent += event["eval_s"]
    return rows


def final_target(rows: list[dict]) -> dict | None:
    """A run's final-epoch figures as a target (None when it has no epoch or a figure is undefined)."""
    if not rows or any(rows[-1].get(k) is None for k in METRICS):
        return None
    return {k: rows[-1][k] for k in METRICS}


def time_to_quality(history_rows: list[dict], target: dict | None) -> dict:
    """The first epoch whose accuracy and AUC are both >= the target's, and its wall time.

    history_rows: per epoch in order, with `epoch`, `wall_s` (evaluation excluded), `accuracy`, `auc`.
    """
    result = {"reached": False, "epoch": None, "wall_s": None, "epochs_run": len(history_rows), "target": target}
    if target is None:
        return result
    for row in history_rows:
        if all(row.get(k) is not None and row[k] >= target[k] for k in METRICS):
            return dict(result, reached=True, epoch=row["epoch"], wall_s=row["wall_s"],
                        at={k: row[k] for k in METRICS})
    return result


def spread(values: list) -> dict:
    """Median and range over repeats; None values (not reached, undefined) are counted, not averaged."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "n": len(values), "missing": len(values),
                "values": [None] * len(values)}
    return {"median": float(np.median(known)), "min": min(known), "max": max(known), "n": len(values),
            "missing": len(values) - len(known), "values": [None if v is None else float(v) for v in values]}


def moved_beyond_range(previous: dict, current: dict) -> bool:
    """Whether a figure's median moved from an earlier result by more than its range between repeats now."""
    if not previous or not current or previous.get("median") is None or current.get("median") is None:
        return False
    if current["n"] - current["missing"] < 2:
        return False  # one repeat has no range to compare with
    return abs(current["median"] - previous["median"]) > current["max"] - current["min"]


def macro_f1_from_rates(accuracy, sensitivity, specificity) -> float | None:
    """Macro F1 of a binary result known by its accuracy, sensitivity and specificity on one folder.

    The three fix the folder's share of positives, p = (accuracy - specificity) / (sensitivity -
    specificity), and with it the confusion matrix up to scale (F1 does not depend on scale). None
    when sensitivity equals specificity (p is then undetermined) or a figure is missing.
    """
    if None in (accuracy, sensitivity, specificity) or abs(sensitivity - specificity) < 1e-9:
        return None
    p = (accuracy - specificity) / (sensitivity - specificity)
    if not 0 < p < 1:
        return None
    tp, fn = sensitivity * p, (1 - sensitivity) * p
    tn, fp = specificity * (1 - p), (1 - specificity) * (1 - p)
    f1_pos = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    f1_neg = 2 * tn / (2 * tn + fn + fp) if tn else 0.0
    return (f1_pos + f1_neg) / 2

