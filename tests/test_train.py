"""Training end to end in-process: the demo set is learnable, and a run records
everything the dashboard and the CLI read."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from cxr_core.evaluate import choose_threshold
from cxr_core.jobs import submit
from cxr_core.registry import default_settings
from cxr_core.store import RunStore
from cxr_core.train import run_job


@pytest.fixture(scope="module")
def learned_demo(tmp_path_factory):
    """regularized_cnn with its default recipe (at 128 px) on the default-size demo set."""
    from cxr_core.demo import write_demo_dataset

    data = write_demo_dataset(tmp_path_factory.mktemp("learn") / "demo")
    store = RunStore(tmp_path_factory.mktemp("learn_runs"))
    settings = default_settings("regularized_cnn")
    settings.image_size = 128  # defaults otherwise: 12 epochs, early stopping on val AUC
    run_id = submit(settings, data, store, start=False)
    started = time.time()
    assert run_job(run_id, store, echo=lambda line: None) == "done"
    print(f"\nregularized_cnn on the demo set: {time.time() - started:.1f}s")  # figure for the notes, not a check
    return store, run_id


def test_demo_set_is_learnable_by_the_regularized_cnn(learned_demo):
    store, run_id = learned_demo
    run = store.get(run_id)
    # Ranking is what training and early stopping aim at (the product's threshold is then chosen
    # on validation); accuracy at a fixed 0.5 on ~35 validation images swung from 0.83 to 1.0
    # between identical runs with the zoom-in augmentation, so it is not the criterion.
    assert max(row["val_auc"] for row in run.history()) > 0.95
    assert run.evaluation("test")["auc"] > 0.9


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

