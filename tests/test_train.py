"""Training end to end in-process: the demo set is learnable, a run records
everything the dashboard and the CLI read, and the page views exist in the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from cxr_core.config import default_settings
from cxr_core.jobs import submit
from cxr_core.store import RunStore
from cxr_core.train import run_job

from conftest import PROJECT_ROOT


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
    assert 0.0 <= threshold["threshold"] <= 1.0 and "sensitivity" in threshold["rule"]
    assert [row["epoch"] for row in run.history()] == [1, 2]
    evaluation = run.evaluation("test")
    assert evaluation["threshold"] == pytest.approx(threshold["threshold"])
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert tn + fp + fn + tp == evaluation["n"] == int((split["split"] == "test").sum())
    predictions = pd.read_csv(run.path / "predictions_test.csv")
    assert len(predictions) == evaluation["n"]
    assert ((predictions["probability"] >= threshold["threshold"]).astype(int) == predictions["predicted"]).all()


def cli(*args, runs=None):
    command = [sys.executable, "-m", "cxr_core", *args] + (["--runs", str(runs)] if runs else [])
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)


def test_cli_explore_reports_balance_and_leakage(demo_dir):
    result = cli("explore", "--data", str(demo_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["synthetic"] is True
    assert all(v == 0 for v in report["patient_overlap"].values())
    assert sum(row["patients"] for row in report["images_per_patient"]) > 0


def test_cli_compare_two_runs_gives_metrics_and_mcnemar(tiny_run, tmp_path):
    import shutil

    store, run_id = tiny_run
    # A copy of the run under another id: identical predictions, so McNemar finds no difference.
    twin = f"{run_id}-twin"
    shutil.copytree(store.run_path(run_id), store.root / twin)
    try:
        result = cli("compare", run_id, twin, "--json", runs=store.root)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert [row["run"] for row in report["metrics"]] == [run_id, twin]
        assert report["mcnemar"]["a_right_b_wrong"] == report["mcnemar"]["a_wrong_b_right"] == 0
        assert report["mcnemar"]["significant"] is False
        assert "warning" not in report
    finally:
        shutil.rmtree(store.root / twin)
