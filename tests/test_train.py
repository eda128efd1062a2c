"""Training end to end in-process: the loss falls, and a run records everything the dashboard and the
CLI read, each figure consistent with the predictions stored beside it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxr_core.evaluate import choose_threshold


def test_training_lowers_the_loss_and_the_stored_figures_follow_from_the_stored_predictions(tiny_run):
    # What holds for every run, whatever its luck: the loss falls from the first epoch, and every
    # figure the run stores is computed correctly from the predictions it stored beside it.
    from sklearn.metrics import confusion_matrix, roc_auc_score

    store, run_id = tiny_run
    run = store.get(run_id)
    losses = [row["loss"] for row in run.history()]
    assert min(losses[1:]) < losses[0], losses
    for split in ("val", "test"):
        evaluation = run.evaluation(split)
        predictions = pd.read_csv(run.path / f"predictions_{split}.csv")
        assert evaluation["auc"] == pytest.approx(roc_auc_score(predictions["label"], predictions["probability"]))
        assert evaluation["confusion_matrix"] == confusion_matrix(predictions["label"], predictions["predicted"]).tolist()


def test_a_run_records_split_threshold_history_and_evaluations(tiny_run):
    store, run_id = tiny_run
    run = store.get(run_id)
    assert run.state == "done" and run.has_model
    split = store.split(run_id)
    assert set(split["split"]) == {"train", "val", "test"}
    # The patient split recorded with the run has no patient on two sides.
    groups = split.groupby("patient_id")["split"].nunique()
    assert (groups == 1).all()
    threshold = json.loads((run.path / "threshold.json").read_text())
    # Chosen on the validation predictions by the run's own rule, not on test.
    val = pd.read_csv(run.path / "predictions_val.csv")
    chosen = choose_threshold(val["label"], val["probability"], run.settings["target_sensitivity"],
                              rule=run.settings["threshold_rule"])
    assert threshold["threshold"] == pytest.approx(chosen["threshold"], abs=1e-6)
    assert threshold["rule"] == chosen["rule"] and "sensitivity" in threshold["rule"]
    assert [row["epoch"] for row in run.history()] == [1, 2]
    evaluation = run.evaluation("test")
    assert evaluation["threshold"] == pytest.approx(threshold["threshold"])
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert tn + fp + fn + tp == evaluation["n"] == int((split["split"] == "test").sum())
    predictions = pd.read_csv(run.path / "predictions_test.csv")
    assert len(predictions) == evaluation["n"]
    assert ((predictions["probability"] >= threshold["threshold"]).astype(int) == predictions["predicted"]).all()



def test_a_recipe_that_trains_on_validation_fits_those_rows_too_and_ours_does_not():
    from dataclasses import replace

    from cxr_core.registry import default_settings
    from cxr_core.train import fit_rows

    split = pd.DataFrame({"split": ["train", "train", "val", "test"], "row": [0, 1, 2, 3]})
    assert list(fit_rows(split, default_settings("regularized_cnn"))["row"]) == [0, 1]
    study = default_settings("regularized_cnn", "study")
    assert list(fit_rows(split, study)["row"]) == [0, 1, 2]
    assert list(fit_rows(split, replace(study, train_on_validation=False))["row"]) == [0, 1]


def test_the_study_recipes_two_logit_head_trains(demo_dir, tmp_path):
    # Its loss goes through the logits: computed on a softmax's probabilities it saturated on real
    # data (loss stuck at 4.10, validation AUC 0.5 from the first epoch).
    from cxr_core.jobs import submit
    from cxr_core.registry import default_settings
    from cxr_core.store import RunStore
    from cxr_core.train import run_job

    store = RunStore(tmp_path / "runs")
    settings = default_settings("regularized_cnn", "study")
    settings.image_size, settings.epochs = 48, 3
    run_id = submit(settings, demo_dir, store, start=False)
    assert run_job(run_id, store, echo=lambda line: None) == "done"
    losses = [row["loss"] for row in store.get(run_id).history()]
    assert min(losses[1:]) < losses[0] and len(set(losses)) == len(losses), losses
