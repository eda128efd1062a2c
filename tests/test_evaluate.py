"""Contracts of cxr_core.evaluate, on cases small enough to check by hand."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cxr_core import evaluate as ev


def noisy_scores(n: int, seed: int = 0):
    """Labels ~ 3:1 pneumonia:normal like the data set, scores that separate them imperfectly."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.75).astype(int)
    prob = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(3)
    return y, prob


def test_perfect_classifier():
    y = [0, 0, 1, 1]
    report = ev.evaluate_predictions(y, [0.1, 0.2, 0.8, 0.9], 0.5, n_boot=200)
    assert report["confusion_matrix"] == [[2, 0], [0, 2]]
    for key in ("accuracy", "sensitivity", "specificity", "precision", "npv", "macro_f1", "auc",
                "average_precision"):
        assert report[key] == 1.0, key
    assert report["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["tpr"][-1] == 1.0


def test_constant_classifier_predicts_everything_positive():
    y = [0, 1, 1, 1]
    report = ev.evaluate_predictions(y, [0.7] * 4, 0.5, n_boot=50)
    assert report["confusion_matrix"] == [[0, 1], [0, 3]]
    assert report["sensitivity"] == 1.0 and report["specificity"] == 0.0
    assert report["npv"] is None  # nothing predicted normal: undefined, not 0 and not NaN
    assert report["auc"] == 0.5
    assert report["per_class"]["NORMAL"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2)


def test_known_two_by_two():
    # tn=3 fp=1 fn=2 tp=4, predicted positive when prob >= threshold (0.5 itself counts).
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    prob = [0.1, 0.2, 0.3, 0.5, 0.4, 0.45, 0.5, 0.6, 0.7, 0.9]
    assert ev.confusion_at(y, prob, 0.5) == [[3, 1], [2, 4]]
    m = ev.metrics_at_threshold(y, prob, 0.5)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["npv"] == pytest.approx(3 / 5)
    pred = (np.array(prob) >= 0.5).astype(int)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))


def brute_force_threshold(y, prob, target):
    y, prob = np.asarray(y), np.asarray(prob)
    best = None
    for t in np.unique(prob):
        pred = prob >= t
        sens = pred[y == 1].mean()
        spec = (~pred[y == 0]).mean()
        if sens >= target and (best is None or (spec, t) > (best[1], best[0])):
            best = (t, spec)
    return best


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.8, 0.95])
def test_threshold_meets_target_and_maximises_specificity(seed, target):
    y, prob = noisy_scores(300, seed)
    rule = ev.choose_threshold(y, prob, target)
    at = ev.metrics_at_threshold(y, prob, rule["threshold"])
    assert at["sensitivity"] >= target
    assert (rule["sensitivity"], rule["specificity"]) == (at["sensitivity"], at["specificity"])
    threshold, specificity = brute_force_threshold(y, prob, target)
    assert rule["threshold"] == pytest.approx(threshold)
    assert rule["specificity"] == pytest.approx(specificity)
    assert rule["rule"] == f"highest specificity with sensitivity >= {target:g} on validation"


def test_threshold_ties_go_to_the_highest_threshold():
    # Thresholds 0.6 and 0.7 both give sensitivity 1 and specificity 1; the higher one wins.
    rule = ev.choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.8], 0.95)
    assert rule["threshold"] == 0.7 and rule["specificity"] == 1.0


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0]])
def test_threshold_falls_back_to_half_on_one_class(y):
    rule = ev.choose_threshold(y, [0.2, 0.6, 0.9])
    assert rule["threshold"] == 0.5
    json.dumps(rule, allow_nan=False)


def test_report_is_json_serialisable_with_curves_thinned():
    y, prob = noisy_scores(3000, seed=1)
    prob = np.append(prob[:-1], 1.0)  # a score of exactly 1 must not collide with the "above all" threshold
    report = ev.evaluate_predictions(y, prob, 0.5, n_boot=100)
    json.dumps(report, allow_nan=False)
    for curve, keys in (("roc", ("fpr", "tpr", "thresholds")), ("pr", ("precision", "recall", "thresholds"))):
        lengths = {len(report[curve][k]) for k in keys}
        assert len(lengths) == 1 and 2 <= lengths.pop() <= ev.MAX_CURVE_POINTS + 1, curve
        assert all(math.isfinite(t) for t in report[curve]["thresholds"])
    assert report["roc"]["thresholds"][0] > 1.0  # endpoint kept: nothing predicted positive
    assert (report["roc"]["fpr"][0], report["roc"]["tpr"][0]) == (0.0, 0.0)
    assert (report["roc"]["fpr"][-1], report["roc"]["tpr"][-1]) == (1.0, 1.0)
    assert report["pr"]["recall"][-1] == 0.0 and report["pr"]["precision"][-1] == 1.0
    assert (report["n"], report["n_normal"] + report["n_pneumonia"]) == (3000, 3000)


@pytest.mark.parametrize("y", [[1, 1, 1, 1], [0, 0, 0, 0]])
def test_one_class_gives_no_auc_without_crashing(y):
    report = ev.evaluate_predictions(y, [0.2, 0.4, 0.6, 0.8], 0.5, n_boot=50)
    json.dumps(report, allow_nan=False)
    assert report["auc"] is None and report["roc"] is None and report["ci95"]["auc"] is None
    undefined = "specificity" if y[0] == 1 else "sensitivity"
    assert report[undefined] is None and report["ci95"][undefined] is None
    assert report["accuracy"] == 0.5


def test_confidence_intervals_contain_the_estimate_and_narrow_with_n():
    widths = []
    for n in (100, 2000):
        y, prob = noisy_scores(n, seed=2)
        report = ev.evaluate_predictions(y, prob, 0.5, n_boot=500, seed=0)
        for name, (lo, hi) in report["ci95"].items():
            assert lo <= report[name] <= hi, (n, name)
        widths.append({k: hi - lo for k, (lo, hi) in report["ci95"].items()})
    assert all(widths[1][k] < widths[0][k] / 2 for k in widths[0])  # ~1/sqrt(n): 20x n, ~4.5x narrower


def test_bootstrap_auc_matches_sklearn_on_each_resample():
    y, prob = noisy_scores(200, seed=3)
    idx = np.random.default_rng(0).integers(0, 200, size=(30, 200))
    expected = [roc_auc_score(y[i], prob[i]) for i in idx]
    np.testing.assert_allclose(ev._bootstrap_auc(y, prob, ev._row_counts(idx, 200)), expected, rtol=1e-12)


def test_bootstrap_is_reproducible():
    y, prob = noisy_scores(1000, seed=4)
    first = ev.evaluate_predictions(y, prob, 0.5, n_boot=1000, seed=7)
    assert ev.evaluate_predictions(y, prob, 0.5, n_boot=1000, seed=7)["ci95"] == first["ci95"]
    assert ev.evaluate_predictions(y, prob, 0.5, n_boot=1000, seed=8)["ci95"] != first["ci95"]


def test_patient_bootstrap_resamples_whole_patients():
    groups = np.repeat(["a", "b", "c"], [1, 2, 3])
    weights = ev._resample_weights(6, groups, n_boot=200, seed=0)
    # Every image of a patient is drawn as often as the patient; the resample keeps the patient count.
    np.testing.assert_array_equal(weights[:, 1], weights[:, 2])
    np.testing.assert_array_equal(weights[:, 3], weights[:, 4])
    np.testing.assert_array_equal(weights[:, 3], weights[:, 5])
    assert (weights[:, [0, 1, 3]].sum(axis=1) == 3).all()


def test_patient_bootstrap_is_wider_when_a_patients_images_agree():
    # 40 patients with 10 images each; every image of a patient is right or wrong together,
    # so there are 40 independent outcomes, not 400: resampling images understates the spread.
    rng = np.random.default_rng(1)
    patient_label = rng.integers(0, 2, 40)
    patient_right = rng.random(40) < 0.8
    y = np.repeat(patient_label, 10)
    right = np.repeat(patient_right, 10)
    prob = np.where(right, y, 1 - y) * 0.8 + 0.1 + rng.random(400) * 0.05
    groups = np.repeat(np.arange(40), 10)
    by_image = ev.evaluate_predictions(y, prob, 0.5, n_boot=2000)["ci95"]
    by_patient = ev.evaluate_predictions(y, prob, 0.5, groups=groups, n_boot=2000)["ci95"]
    for metric in ("accuracy", "auc"):
        width_image = by_image[metric][1] - by_image[metric][0]
        width_patient = by_patient[metric][1] - by_patient[metric][0]
        assert width_patient > 2 * width_image, (metric, width_image, width_patient)


def test_patient_bootstrap_equals_image_bootstrap_with_one_image_each():
    y, prob = noisy_scores(300, seed=6)
    images = ev.evaluate_predictions(y, prob, 0.5, n_boot=500, seed=3)
    patients = ev.evaluate_predictions(y, prob, 0.5, groups=np.arange(300), n_boot=500, seed=3)
    assert patients["ci95"] == images["ci95"]
    assert (images["ci_method"], patients["ci_method"]) == ("bootstrap over images", "bootstrap over patients")


def test_youden_rule_maximises_balanced_accuracy_on_validation():
    y, prob = noisy_scores(400, seed=9)
    choice = ev.choose_threshold(y, prob, rule="youden")
    at = ev.metrics_at_threshold(y, prob, choice["threshold"])
    best = max(ev.metrics_at_threshold(y, prob, t)["sensitivity"] + ev.metrics_at_threshold(y, prob, t)["specificity"]
               for t in np.unique(prob))
    assert at["sensitivity"] + at["specificity"] == pytest.approx(best)
    assert choice["rule_name"] == "youden"
    sensitive = ev.choose_threshold(y, prob, 0.99, rule="sensitivity")
    # Demanding 99% sensitivity gives a lower cut than balancing the two errors.
    assert sensitive["threshold"] < choice["threshold"]
    with pytest.raises(ValueError, match="threshold rule"):
        ev.choose_threshold(y, prob, rule="median")


def test_metrics_at_threshold_agrees_with_full_report():
    y, prob = noisy_scores(500, seed=5)
    for threshold in (0.3, 0.5, 0.62):
        quick = ev.metrics_at_threshold(y, prob, threshold)
        full = ev.evaluate_predictions(y, prob, threshold, n_boot=0)
        assert {k: full[k] for k in quick} == quick
        assert full["per_class"]["PNEUMONIA"]["recall"] == pytest.approx(quick["sensitivity"])
        assert full["per_class"]["NORMAL"]["recall"] == pytest.approx(quick["specificity"])
        assert full["per_class"]["PNEUMONIA"]["precision"] == pytest.approx(quick["precision"])


def test_mcnemar_matches_exact_binomial():
    # 14 images only A gets right, 5 only B, 30 both right: p = 2 * P(Binomial(19, 1/2) <= 5).
    y = np.ones(49, dtype=int)
    a = np.array([1] * 14 + [0] * 5 + [1] * 30)
    b = np.array([0] * 14 + [1] * 5 + [1] * 30)
    result = ev.mcnemar_test(y, a, b)
    expected = 2 * sum(math.comb(19, k) for k in range(6)) / 2**19
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)
    assert (result["n"], result["a_right_b_wrong"], result["a_wrong_b_right"]) == (49, 14, 5)
    assert result["significant"] is False
    assert "14" in result["reading"] and "5" in result["reading"] and "0.064" in result["reading"]
    json.dumps(result, allow_nan=False)


def test_mcnemar_significant_and_identical_models():
    y = np.ones(40, dtype=int)
    a, b = np.ones(40, dtype=int), np.array([0] * 20 + [1] * 20)
    assert ev.mcnemar_test(y, a, b)["significant"] is True
    same = ev.mcnemar_test(y, a, a)
    assert same["p_value"] == 1.0 and same["significant"] is False


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="labels"):
        ev.evaluate_predictions([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="one per image"):
        ev.confusion_at([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="threshold first"):
        ev.mcnemar_test([0, 1], [0.2, 0.9], [0, 1])


def test_does_not_import_tensorflow(project_root):
    # Pages score saved predictions through this module; loading TensorFlow there costs seconds.
    code = "import sys, cxr_core.evaluate; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=project_root).returncode == 0



def test_a_fixed_threshold_is_not_chosen_on_the_data():
    from cxr_core.evaluate import fixed_threshold, threshold_for
    from cxr_core.registry import default_settings

    y, p = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    choice = fixed_threshold(y, p)
    assert (choice["threshold"], choice["rule_name"], choice["sensitivity"], choice["specificity"]) == (0.5, "fixed", 0.5, 0.5)
    study = threshold_for(default_settings("regularized_cnn", "study"), y, p)
    assert study["threshold"] == 0.5 and study["rule"] == "fixed at 0.5"
    ours = threshold_for(default_settings("regularized_cnn"), y, p)
    assert ours == ev.choose_threshold(y, p, 0.95, rule=default_settings("regularized_cnn").threshold_rule)
    with pytest.raises(ValueError):
        ev.choose_threshold(y, p, rule="fixed")
