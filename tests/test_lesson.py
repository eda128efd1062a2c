"""The Lesson's engine: calibration (against scikit-learn), occlusion through the one preprocessing
path, the leakage measurement, per-step tables, the randomized-model heat map and the HTML report."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from cxr_core import calibration, data, images, jobs, lesson, pipeline, report
from cxr_core.config import UserError
from cxr_core.store import OWN, RunStore, evaluation_files, occluded_source, split_source


def scores(n=400, seed=0, sharpness=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Class means at +-0.5 with unit variance: the true log-odds are exactly z, so sigmoid(z) is
    # calibrated and sigmoid(3 z) is over-confident by a temperature of 3.
    z = (2 * y - 1) * 0.5 + rng.normal(0, 1.0, n)
    p = 1 / (1 + np.exp(-sharpness * z))
    return y, p


# ---------------------------------------------------------------- calibration


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


# ---------------------------------------------------------------- occlusion


def test_occlusion_blacks_out_the_lung_box_or_all_around_it():
    pixels = np.full((100, 100), 200, np.uint8)
    top, bottom, left, right = (round(f * 100) for f in images.LUNG_BOX)
    lungs, outside = images.occlude(pixels, "lungs"), images.occlude(pixels, "outside")
    assert (lungs[top:bottom, left:right] == 0).all() and lungs[0, 0] == 200
    assert (outside[top:bottom, left:right] == 200).all() and outside[0, 0] == 0 and outside[-1, -1] == 0
    assert images.occlude(pixels, None) is pixels
    with pytest.raises(UserError):
        images.occlude(pixels, "heart")


def test_occlusion_goes_through_the_one_preprocessing_path_and_the_cache_key(demo_dir):
    paths = [str(p) for p in sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:3]]
    plain = pipeline.build_cache(paths, 48)
    occluded = pipeline.build_cache(paths, 48, occlusion="lungs")
    assert plain.path != occluded.path
    assert plain.path.name.startswith(data.fingerprint(paths, 48, images.PREPROCESS_VERSION))  # old keys kept
    rows = np.arange(3)
    expected = np.stack([images.load_for_model(p, 48, occlusion="lungs") for p in paths])
    np.testing.assert_array_equal(occluded.read(rows), expected)
    assert not np.array_equal(plain.read(rows), occluded.read(rows))


def test_source_keys_of_occluded_evaluations():
    assert occluded_source(OWN, "lungs") == "own+occlude-lungs"
    assert occluded_source("chest_xray", None) == "chest_xray"
    assert split_source("chest_xray+occlude-outside") == ("chest_xray", "outside")
    assert split_source(OWN) == (OWN, None)
    assert evaluation_files(RunStore("/tmp").run_path("r"), "test", "own+occlude-lungs")[0].name == \
        "evaluation_test@own+occlude-lungs.json"


def test_an_occluded_evaluation_is_stored_apart_and_queued_on_the_worker(tiny_run, tmp_path):
    import shutil

    from cxr_core.inference import evaluate_run

    store, run_id = tiny_run
    private = RunStore(tmp_path / "runs")
    shutil.copytree(store.run_path(run_id), private.root / run_id)
    plain = private.get(run_id).evaluation("test")
    result = evaluate_run(run_id, "test", private, occlusion="lungs")
    run = private.get(run_id)
    assert result["source"] == "own+occlude-lungs" and result["n"] == plain["n"]
    assert run.evaluation("test") == plain  # the plain evaluation is untouched
    assert run.evaluation_sources("test") == [OWN, "own+occlude-lungs"]
    plain_p = pd.read_csv(evaluation_files(run.path, "test")[1])["probability"]
    occluded_p = pd.read_csv(evaluation_files(run.path, "test", "own+occlude-lungs")[1])["probability"]
    assert not np.allclose(plain_p, occluded_p)

    request = jobs.submit_evaluation(run_id, run.settings["data_dir"], private, occlusion="outside", start=False)
    assert jobs.submit_evaluation(run_id, run.settings["data_dir"], private, occlusion="outside",
                                  start=False) == request  # not queued twice
    (queued,) = jobs.queued_evaluations(private)
    assert jobs.run_evaluation(queued, private, echo=lambda line: None) == "done"
    table, missing = lesson.occlusion_rows(private.get(run_id))
    assert len(table) == 3 and missing == []
    assert table["scored on"].tolist() == ["own test split", "own test split, lung fields blacked out",
                                           "own test split, only the lung fields kept"]


# ---------------------------------------------------------------- lesson numbers and the report


def test_the_leakage_measurement_scores_both_splits_of_the_same_pool(demo_dir):
    scan = data.scan_folder(demo_dir)
    measured = lesson.leakage_experiment(scan.manifest, repeats=2)
    runs = pd.DataFrame(measured["runs"])
    assert set(runs["split"]) == {"image", "patient"} and len(runs) == 4
    assert (runs.loc[runs["split"] == "patient", "children_on_both_sides"] == 0).all()
    assert (runs.loc[runs["split"] == "image", "children_on_both_sides"] > 0).all()  # demo patients have several images
    assert measured["overstatement"] == pytest.approx(measured["image_level_accuracy"] - measured["patient_level_accuracy"])
    assert "1-nearest-neighbour" in measured["method"]


def test_study_runs_and_the_transfer_table_say_where_weights_came_from(tiny_run):
    store, run_id = tiny_run
    run = store.get(run_id)
    assert lesson.study_runs(store, run.settings["data_dir"]) == {"regularized_cnn": run}
    assert lesson.study_runs(store, "/elsewhere") == {}
    table = lesson.transfer_rows(store, run.settings["data_dir"])
    assert table.loc[0, "weights"] == "random (trained from scratch)"
    assert table.loc[0, "auc"] == pytest.approx(run.evaluation("test")["auc"])  # the run's own test metrics
    assert len(lesson.STEPS) == 9 and all(step.question.endswith("?") for step in lesson.STEPS)


def test_the_report_is_one_offline_html_file_with_the_figures(tiny_run):
    store, run_id = tiny_run
    html = report.build_report([run_id], store)
    assert not re.search(r"<script[^>]*src=[\"']?https?://", html)  # plotly.js inlined, no CDN
    assert html.count('class="plotly-graph-div"') >= 3 and "Plotly.newPlot" in html
    from plotly.offline import get_plotlyjs

    assert len(html) < 1.5 * len(get_plotlyjs())  # plotly.js once, not once per figure
    assert run_id in html and "SYNTHETIC" in html and "data:image/png;base64," in html
    evaluation = store.get(run_id).evaluation("test")
    assert f"{evaluation['accuracy']:.3f} [" in html  # the interval beside the value
    assert re.search(r"Made \d{4}-\d\d-\d\d", html)
