"""Metrics, curves, confidence intervals and model-vs-model tests.

Pure numpy/scipy/scikit-learn (no TensorFlow), so pages and benchmarks can
score saved predictions without loading a model. Labels follow config.CLASSES:
1 (PNEUMONIA) is the positive class and "predicted positive" means
prob >= threshold, the same convention as sklearn's roc_curve.

    from cxr_core import evaluate
    rule = evaluate.choose_threshold(y_val, p_val)        # on validation only
    report = evaluate.evaluate_predictions(y_test, p_test, rule["threshold"])
    json.dumps(report, allow_nan=False)                   # plain types, NaN -> None
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from .config import CLASSES, METRICS, THRESHOLD_RULES

MAX_CURVE_POINTS = 200


def check_scores(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} labels but there are {p.size} scores; pass one per image")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 ({CLASSES[0]}) or 1 ({CLASSES[1]}), got {np.unique(y)[:5]}")
    if not np.isfinite(p).all():
        raise ValueError("scores contain NaN or infinity; check the model's predictions")
    return y.astype(np.int64), p


def json_ready(value):
    """Numpy scalars/arrays to Python types and NaN/inf to None, so json.dumps(allow_nan=False) works."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()  # also turns 0-d arrays into scalars
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _ratio(num, den):
    # Works on scalars and bootstrap arrays alike; an undefined ratio is NaN, never a warning.
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _from_counts(tn, fp, fn, tp) -> dict:
    """Threshold metrics from confusion counts; one formula for point estimates and the bootstrap."""
    f1_pos = np.nan_to_num(_ratio(2 * tp, 2 * tp + fp + fn))  # zero_division=0, as sklearn's f1
    f1_neg = np.nan_to_num(_ratio(2 * tn, 2 * tn + fn + fp))
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "macro_f1": (f1_pos + f1_neg) / 2,
    }


def confusion_at(y_true, prob, threshold) -> list[list[int]]:
    """[[tn, fp], [fn, tp]], predicting PNEUMONIA when prob >= threshold."""
    y, p = check_scores(y_true, prob)
    return confusion_matrix(y, (p >= threshold).astype(np.int64), labels=[0, 1]).tolist()


def metrics_at_threshold(y_true, prob, threshold) -> dict:
    """Cheap threshold metrics for a live slider; undefined ratios are None."""
    cm = confusion_at(y_true, prob, threshold)
    (tn, fp), (fn, tp) = cm
    return json_ready({"threshold": float(threshold), "confusion_matrix": cm, **_from_counts(tn, fp, fn, tp)})


def choose_threshold(y_true, prob, target_sensitivity: float = 0.95, rule: str = "sensitivity") -> dict:
    """The decision threshold chosen on validation data by one of THRESHOLD_RULES; 0.5 if undefined.

    "sensitivity": highest specificity with sensitivity >= target (ties: highest
    threshold), since missing pneumonia costs more than a false alarm.
    "youden": the largest sensitivity + specificity - 1 (Youden's J, the same as
    the best balanced accuracy; ties: highest threshold), which does not assume
    the validation split's score distribution carries over to new images.
    Run it on validation data: a threshold chosen on test data flatters the test score.
    """
    if rule not in THRESHOLD_RULES or rule == "fixed":
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    y, p = check_scores(y_true, prob)
    threshold = 0.5
    if 0 < y.sum() < y.size:
        # drop_intermediate=False: every distinct score is a candidate, so the optimum is not skipped.
        fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
        finite = np.isfinite(thresholds)
        specificity = 1.0 - fpr
        if rule == "youden":
            score = np.where(finite, tpr + specificity, -np.inf)
            threshold = float(thresholds[score == score.max()].max())
        else:
            ok = (tpr >= target_sensitivity) & finite
            if ok.any():
                best = ok & (specificity == specificity[ok].max())
                threshold = float(thresholds[best].max())
    threshold = float(np.clip(threshold, 0.0, 1.0))
    at = metrics_at_threshold(y, p, threshold)
    described = (f"highest specificity with sensitivity >= {target_sensitivity:g} on validation" if rule == "sensitivity"
                 else "highest sensitivity + specificity (Youden's J) on validation")
    return {"threshold": threshold, "rule": described, "rule_name": rule,
            "sensitivity": at["sensitivity"], "specificity": at["specificity"]}


def fixed_threshold(y_true, prob, threshold: float = 0.5) -> dict:
    """A threshold set in advance, not chosen on data (the study's argmax of two outputs is 0.5)."""
    y, p = check_scores(y_true, prob)
    at = metrics_at_threshold(y, p, threshold)
    return {"threshold": float(threshold), "rule": f"fixed at {threshold:g}", "rule_name": "fixed",
            "sensitivity": at["sensitivity"], "specificity": at["specificity"]}


def threshold_for(settings, y_val, p_val) -> dict:
    """The threshold a run's settings ask for, from its validation predictions only
    (settings.threshold_rule: one of THRESHOLD_RULES)."""
    if settings.threshold_rule == "fixed":
        return fixed_threshold(y_val, p_val, settings.fixed_threshold)
    return choose_threshold(y_val, p_val, settings.target_sensitivity, rule=settings.threshold_rule)


def _resample_weights(n: int, groups, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) counts: how often each image is in each bootstrap resample.

    With `groups` (patient ids) whole patients are resampled with replacement, so
    a child's several images come and go together: images of one child are not
    independent, and resampling them one by one understates the uncertainty.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, n, size=(n_boot, n))
        return _row_counts(idx, n)
    # Numbered in order of first appearance: one image per patient draws exactly what the image bootstrap draws.
    group, uniques = pd.factorize(np.asarray(groups).astype(str))
    n_groups = len(uniques)
    picked = _row_counts(rng.integers(0, n_groups, size=(n_boot, n_groups)), n_groups)
    return picked[:, group]


def _row_counts(idx: np.ndarray, size: int) -> np.ndarray:
    flat = (np.arange(idx.shape[0])[:, None] * size + idx).ravel()
    return np.bincount(flat, minlength=idx.shape[0] * size).reshape(idx.shape[0], size).astype(np.float64)


def _bootstrap_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of every resample at once (Mann-Whitney with ties counted half); NaN for one-class resamples.

    Scores are grouped by distinct value, each resample's positive and negative
    weight summed per group with one bincount, and the AUC read off cumulative
    sums: O(n_boot * n) with no per-resample sklearn call.
    """
    _, score_group = np.unique(p, return_inverse=True)
    n_boot, n_groups = weights.shape[0], score_group.max() + 1
    flat = np.arange(n_boot)[:, None] * n_groups + score_group[None, :]
    size = n_boot * n_groups
    is_pos = y == 1
    pos = np.bincount(flat[:, is_pos].ravel(), weights[:, is_pos].ravel(), minlength=size).reshape(n_boot, n_groups)
    neg = np.bincount(flat[:, ~is_pos].ravel(), weights[:, ~is_pos].ravel(), minlength=size).reshape(n_boot, n_groups)
    neg_below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return _ratio(wins, pos.sum(axis=1) * neg.sum(axis=1))


def _bootstrap_ci(y, p, pred, n_boot: int, seed: int, groups=None) -> dict:
    """Percentile 95% intervals from resampling images (or, with groups, patients) with replacement."""
    weights = _resample_weights(y.size, groups, n_boot, seed)
    yb, pb = y.astype(bool), pred.astype(bool)
    tp, fp = weights @ (yb & pb), weights @ (~yb & pb)
    fn, tn = weights @ (yb & ~pb), weights @ (~yb & ~pb)
    stats = _from_counts(tn, fp, fn, tp)
    stats["auc"] = _bootstrap_auc(y, p, weights)
    ci = {}
    for name in METRICS:
        values = stats[name][np.isfinite(stats[name])]  # skip resamples where it is undefined
        ci[name] = np.percentile(values, [2.5, 97.5]).tolist() if values.size else None
    return ci


def _thin(*arrays: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list:
    """Keep at most max_points evenly spaced points, endpoints included, so charts stay light."""
    n = len(arrays[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return [a[keep] for a in arrays]


def evaluate_predictions(y_true, prob, threshold: float, *, groups=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Full JSON-ready report for one model on one split at one threshold.

    `groups` (one patient id per image) makes the intervals a cluster bootstrap
    over patients; without it images are resampled one by one.
    """
    y, p = check_scores(y_true, prob)
    if groups is not None and len(groups) != y.size:
        raise ValueError(f"groups has {len(groups)} ids but there are {y.size} images; pass one patient id per image")
    pred = (p >= threshold).astype(np.int64)
    at = metrics_at_threshold(y, p, threshold)
    both_classes = 0 < y.sum() < y.size
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=0)
    report = {
        "n": y.size, "n_normal": int((y == 0).sum()), "n_pneumonia": int(y.sum()),
        **at,
        "auc": roc_auc_score(y, p) if both_classes else None,
        "per_class": {name: {"precision": precision[i], "recall": recall[i], "f1": f1[i],
                             "support": support[i]} for i, name in enumerate(CLASSES)},
        "ci95": _bootstrap_ci(y, p, pred, n_boot, seed, groups) if n_boot > 0 and y.size else None,
        "ci_method": None if n_boot <= 0 else ("bootstrap over patients" if groups is not None else "bootstrap over images"),
        "roc": None, "pr": None, "average_precision": None,
        "brier": float(np.mean((p - y) ** 2)) if y.size else None,
    }
    if both_classes:
        # A threshold above every score predicts nothing positive; sklearn marks it inf.
        above_all = 1.0 if p.max() < 1.0 else float(np.nextafter(p.max(), np.inf))
        fpr, tpr, roc_thr = roc_curve(y, p)
        fpr, tpr, roc_thr = _thin(fpr, tpr, np.where(np.isfinite(roc_thr), roc_thr, above_all))
        report["roc"] = {"fpr": fpr, "tpr": tpr, "thresholds": roc_thr}
        prec, rec, pr_thr = precision_recall_curve(y, p, drop_intermediate=True)
        # sklearn's last PR point (recall 0, precision 1) has no threshold; give it the
        # "above all" one so the three lists line up point for point.
        prec, rec, pr_thr = _thin(prec, rec, np.append(pr_thr, above_all))
        report["pr"] = {"precision": prec, "recall": rec, "thresholds": pr_thr}
        report["average_precision"] = average_precision_score(y, p)
    return json_ready(report)


def with_interval(value, interval=None, digits: int = 3) -> str:
    """"0.912 [0.880, 0.940]": a figure and its interval as every table and the CLI print it ("n/a" if missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    if interval is not None and len(interval) == 2 and not any(v is None or math.isnan(v) for v in interval):
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def mcnemar_test(y_true, pred_a, pred_b, *, name_a: str = "Model A", name_b: str = "Model B") -> dict:
    """Exact McNemar test: do two models' errors on the same images differ more than chance?

    Only the images where exactly one model is right carry information; under
    "no difference" each such image is a fair coin, hence the binomial test.
    """
    y, a = check_scores(y_true, pred_a)
    _, b = check_scores(y_true, pred_b)
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("pred_a and pred_b must be 0/1 labels; apply each model's threshold first")
    a_right, b_right = a == y, b == y
    only_a = int((a_right & ~b_right).sum())
    only_b = int((~a_right & b_right).sum())
    p_value = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    significant = bool(p_value < 0.05)
    if only_a + only_b == 0:
        reading = (f"{name_a} and {name_b} are right and wrong on exactly the same images, "
                   "so this test cannot tell them apart.")
    else:
        chance = "less than 0.001" if p_value < 0.001 else f"{p_value:.2g}"
        verdict = ("so the difference is unlikely to be chance alone" if significant
                   else "so it is not clearly more than chance")
        reading = (f"{name_a} is right on {only_a} images that {name_b} gets wrong, and {name_b} on "
                   f"{only_b} that {name_a} gets wrong; a difference this large would arise by chance "
                   f"with probability {chance}, {verdict}.")
    return {"n": int(y.size), "a_right_b_wrong": only_a, "a_wrong_b_right": only_b,
            "p_value": float(p_value), "significant": significant, "reading": reading}
