"""Contracts of cxr_core.calibration, against scikit-learn where it has the same measure: reliability
bins, ECE and Brier, temperature scaling fitted on validation, predictive values at another prevalence,
and a run's calibration read from its stored predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from cxr_core import calibration
from cxr_core.config import UserError
from cxr_core.store import evaluation_files


def scores(n=400, seed=0, sharpness=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Class means at +-0.5 with unit variance: the true log-odds are exactly z, so sigmoid(z) is
    # calibrated and sigmoid(3 z) is over-confident by a temperature of 3.
    z = (2 * y - 1) * 0.5 + rng.normal(0, 1.0, n)
    p = 1 / (1 + np.exp(-sharpness * z))
    return y, p



def test_reliability_bins_and_brier_agree_with_sklearn():
    y, p = scores()
    p[:4] = [0.0, 0.1, 0.5, 1.0]  # edge values fall in the same bins as sklearn puts them
    bins = calibration.reliability_bins(y, p)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(bins["observed"], prob_true)
    np.testing.assert_allclose(bins["mean_predicted"], prob_pred)
    assert calibration.brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    expected_ece = np.sum(np.abs(prob_true - prob_pred) * counts[counts > 0]) / len(y)
    assert calibration.expected_calibration_error(y, p) == pytest.approx(expected_ece)
    assert bins["count"].sum() == len(y)



def test_temperature_fitted_on_validation_undoes_over_confidence_without_changing_the_ranking():
    y_val, p_val = scores(4000, seed=1, sharpness=3.0)  # logits three times too large
    y_test, p_test = scores(2000, seed=2, sharpness=3.0)
    assert calibration.fit_temperature(y_val, p_val) == pytest.approx(3.0, rel=0.15)
    result = calibration.calibration_report(y_val, p_val, y_test, p_test)
    assert result["ece_scaled"] < result["ece"] and result["brier_scaled"] < result["brier"]
    scaled = calibration.apply_temperature(p_test, result["temperature"])
    assert roc_auc_score(y_test, scaled) == pytest.approx(roc_auc_score(y_test, p_test))
    assert calibration.fit_temperature(np.ones(5), np.full(5, 0.9)) == 1.0  # one class: nothing to fit



def test_predictive_values_follow_bayes_at_another_prevalence():
    at = calibration.predictive_values(0.9, 0.8, 0.05)
    assert at["ppv"] == pytest.approx(0.045 / (0.045 + 0.19))
    assert at["npv"] == pytest.approx(0.76 / (0.76 + 0.005))
    assert at["per_1000"]["false_alarms"] == pytest.approx(190)
    assert calibration.predictive_values(0.9, 0.8, 0.5)["ppv"] > at["ppv"]



@pytest.mark.parametrize("sensitivity, specificity", [(0.9, 0.8), (1.0, 1.0), (0.5, 0.0), (0.0, 1.0)])
def test_predictive_values_at_the_edges_never_divide_by_zero(sensitivity, specificity):
    for prevalence in (0.01, 0.5, 0.99):
        at = calibration.predictive_values(sensitivity, specificity, prevalence)
        calls = sensitivity * prevalence + (1 - specificity) * (1 - prevalence)
        assert at["ppv"] == (pytest.approx(sensitivity * prevalence / calls) if calls else None)
        assert sum(at["per_1000"].values()) == pytest.approx(1000)


def test_a_runs_calibration_is_its_stored_test_predictions_scaled_by_its_validation_temperature(tiny_run):
    store, run_id = tiny_run
    path = store.run_path(run_id)
    val, test = (pd.read_csv(evaluation_files(path, split)[1]) for split in ("val", "test"))
    result = calibration.for_run(run_id, store)
    assert (result["run"], result["split"], result["source"]) == (run_id, "test", "own")
    assert result["temperature"] == pytest.approx(calibration.fit_temperature(val["label"], val["probability"]))
    assert result["brier"] == pytest.approx(brier_score_loss(test["label"], test["probability"]))
    with pytest.raises(UserError, match=f"run {run_id} has no stored predictions on test \\(elsewhere\\); "
                                        f"run `python -m cxr_core evaluate {run_id} --split test --data FOLDER`"):
        calibration.for_run(run_id, store, source="elsewhere")
