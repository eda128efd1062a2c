"""Is P(pneumonia) a probability? Reliability, expected calibration error, Brier score,
temperature scaling, and what a call means at another prevalence.

    from cxr_core import calibration
    report = calibration.calibration_report(y_val, p_val, y_test, p_test)   # JSON-ready
    calibration.predictive_values(sensitivity, specificity, prevalence=0.05)

Bins follow scikit-learn's `calibration_curve(strategy="uniform")` exactly (ten
equal-width bins, an edge value falls in the lower bin, empty bins left out),
so the reliability diagram and sklearn agree point for point. The temperature
is fitted on validation predictions only: fitted on test, it would flatter the
test calibration it is meant to be judged on.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from .evaluate import check_scores, json_ready

N_BINS = 10
# Probabilities are clipped this far from 0 and 1 before taking logits: a saturated
# sigmoid stores exactly 1.0 in float32, whose logit is infinite.
_EPS = 1e-7


def reliability_bins(y_true, prob, n_bins: int = N_BINS) -> dict:
    """Per non-empty bin: mean predicted probability, observed share of PNEUMONIA, and count."""
    y, p = check_scores(y_true, prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)  # as sklearn: an edge value goes to the lower bin
    total = np.bincount(ids, minlength=n_bins)
    predicted = np.bincount(ids, weights=p, minlength=n_bins)
    observed = np.bincount(ids, weights=y, minlength=n_bins)
    keep = total > 0
    return {"lower": edges[:-1][keep], "upper": edges[1:][keep], "count": total[keep],
            "mean_predicted": predicted[keep] / total[keep], "observed": observed[keep] / total[keep]}


def expected_calibration_error(y_true, prob, n_bins: int = N_BINS) -> float:
    """Count-weighted mean gap between confidence and observed frequency over the bins (Guo et al. 2017,
    binary form: the positive class's probability)."""
    bins = reliability_bins(y_true, prob, n_bins)
    gaps = np.abs(bins["mean_predicted"] - bins["observed"])
    return float(np.sum(gaps * bins["count"]) / max(np.sum(bins["count"]), 1))


def brier_score(y_true, prob) -> float:
    """Mean squared difference between P(pneumonia) and the truth (0 or 1); 0 is perfect."""
    y, p = check_scores(y_true, prob)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def _logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(prob, temperature: float) -> np.ndarray:
    """P(pneumonia) after dividing the logit by `temperature` (above 1 softens, below 1 sharpens).

    The ranking of images is unchanged, so AUC is too; only the confidence moves.
    """
    return 1.0 / (1.0 + np.exp(-_logit(prob) / float(temperature)))


def fit_temperature(y_true, prob) -> float:
    """The temperature that minimises the negative log-likelihood of (y, prob) (Guo et al. 2017)."""
    y, p = check_scores(y_true, prob)
    if y.size == 0 or y.min() == y.max():
        return 1.0  # one class only: nothing to fit against
    z = _logit(p)

    def nll(log_t: float) -> float:
        q = np.clip(1.0 / (1.0 + np.exp(-z / np.exp(log_t))), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))

    # Searched on log T: temperatures from 1/100 to 100 are equally reachable.
    best = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded")
    return float(np.exp(best.x))


def calibration_report(y_val, p_val, y_test, p_test, n_bins: int = N_BINS) -> dict:
    """ECE, Brier and reliability bins on `test`, before and after a temperature fitted on `val`."""
    temperature = fit_temperature(y_val, p_val)
    scaled = apply_temperature(p_test, temperature)
    return json_ready({
        "n": int(np.size(y_test)), "n_bins": n_bins,
        "ece": expected_calibration_error(y_test, p_test, n_bins), "brier": brier_score(y_test, p_test),
        "bins": reliability_bins(y_test, p_test, n_bins),
        "temperature": temperature, "temperature_fitted_on": "validation predictions",
        "ece_scaled": expected_calibration_error(y_test, scaled, n_bins), "brier_scaled": brier_score(y_test, scaled),
        "bins_scaled": reliability_bins(y_test, scaled, n_bins),
    })


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> dict:
    """PPV and NPV by Bayes' rule at a prevalence other than the test set's.

    Sensitivity and specificity belong to the model; PPV and NPV belong to the
    model and the population: at 5% prevalence most PNEUMONIA calls of a
    90%-specific model are false alarms.
    """
    sens, spec, prev = float(sensitivity), float(specificity), float(prevalence)
    true_pos, false_pos = sens * prev, (1 - spec) * (1 - prev)
    true_neg, false_neg = spec * (1 - prev), (1 - sens) * prev
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None
    return {"prevalence": prev, "ppv": ppv, "npv": npv,
            "per_1000": {"true_alarms": 1000 * true_pos, "false_alarms": 1000 * false_pos,
                         "missed": 1000 * false_neg, "cleared": 1000 * true_neg}}


def site_threshold(y_true, prob, target_sensitivity: float = 0.95) -> dict:
    """Site calibration: the threshold with the highest specificity at sensitivity >= target on a small
    labelled sample of the site's own images, as a hospital recalibrates an adopted model's operating
    point (Hwang et al., Eur Radiol 2020). The sample must not be the images then scored."""
    from .evaluate import choose_threshold

    choice = choose_threshold(y_true, prob, target_sensitivity, rule="sensitivity")
    choice["rule"] = f"highest specificity with sensitivity >= {target_sensitivity:g} on a labelled folder"
    return choice


def for_run(run_id: str, store, split: str = "test", source: str = "own") -> dict:
    """calibration_report() of a run's stored predictions on (split, source), the temperature fitted on
    its own validation predictions. Raises UserError when either is missing."""
    import pandas as pd

    from .config import UserError
    from .store import OWN, evaluation_files

    path = store.run_path(run_id)
    tables = {}
    for name, (which, where) in {"val": ("val", OWN), "test": (split, source)}.items():
        csv = evaluation_files(path, which, where)[1]
        if not csv.is_file():
            how = "" if where == OWN else " --data FOLDER"
            raise UserError(f"run {run_id} has no stored predictions on {which} ({where}); "
                            f"run `python -m cxr_core evaluate {run_id} --split {which}{how}` first")
        tables[name] = pd.read_csv(csv)
    report = calibration_report(tables["val"]["label"], tables["val"]["probability"],
                                tables["test"]["label"], tables["test"]["probability"])
    return dict(report, run=run_id, split=split, source=source)
