"""The Lesson's engine (cxr_core.lesson): the leakage measurement, each step's numbers and tables, the
study's runs on a data set, and an occluded evaluation as the shortcut step shows it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core import data, jobs, lesson
from cxr_core.store import OWN, RunStore, evaluation_files

# ---------------------------------------------------------------- occlusion


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
    official = "test/ folder (the official split)"
    assert table["scored on"].tolist() == [official, f"{official}, lung fields blacked out",
                                           f"{official}, only the lung fields kept"]


# ---------------------------------------------------------------- lesson numbers


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


def test_step_2_is_one_set_of_numbers_for_the_page_and_the_summary(demo_dir, tiny_run):
    store, _ = tiny_run
    scan = data.scan_folder(demo_dir)
    split = data.assign_splits(scan.manifest, seed=42)
    numbers = lesson.validation_and_patients(scan, split)
    assert numbers["official_val_images"] == int((scan.manifest["source_split"] == "val").sum())
    assert numbers["leakage_check"] == data.leakage_report(split)
    assert numbers["naive_split_children_on_both_sides"]["train/test"] > 0  # demo children have several images
    assert len(numbers["measured"]["runs"]) == 10  # each repeat under each split: the page's strip chart
    printed = lesson.summary(scan, split, store)["steps"]["2_validation_and_patients"]
    assert printed == {**numbers, "measured": {k: v for k, v in numbers["measured"].items() if k != "runs"}}


# ---------------------------------------------------------------- step 5 on a Kaggle-layout folder


def test_step_5_compares_validation_with_the_official_test_split_of_a_kaggle_layout_folder(tiny_run):
    store, run_id = tiny_run
    run = store.get(run_id)  # the demo set has test/ beside train/, as the Kaggle download does
    table = lesson.shift_rows(run)
    assert table["scored on"].tolist() == ["test/ folder (the official split)", lesson.VALIDATION_ROW]
    assert table["n"].tolist() == [run.evaluation("test")["n"], run.evaluation("val")["n"]]


# ---------------------------------------------------------------- is the class ready?


def _states(rows) -> dict:
    return {row["step"]: row["state"] for row in rows}


def test_lesson_prepare_queues_what_is_missing_and_check_follows_it_to_ready(demo_dir, tmp_path, cli):
    import json

    from cxr_core import lesson_prep, reads

    runs = tmp_path / "runs"
    store = RunStore(runs)
    before = json.loads(cli("lesson", "--check", "--json", "--data", demo_dir, "--runs", runs).stdout)
    assert _states(before) == {1: "ready", 2: "ready", **{s: "missing" for s in range(3, 10)}, "read": "missing"}
    assert "python -m cxr_core lesson --prepare" in before[3]["command"]
    assert "reads new" in before[-1]["command"]

    # Only step 4's run, tiny: seconds on the demo set, not the lineup at real sizes. This process holds
    # the worker lock meanwhile, so no background worker starts: the run is trained here, below.
    with jobs.worker_lock(store):
        done = cli("lesson", "--prepare", "--step", 4, "--epochs", 1, "--image-size", 64, "--data", demo_dir,
                   "--runs", runs)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("queued 1 training runs and 0 scorings")
    (run,) = store.list()
    assert (run.model, run.recipe, run.settings["epochs"], run.settings["image_size"]) == ("regularized_cnn", "improved", 1, 64)
    assert _states(lesson_prep.check(demo_dir, store))[4] == "training"
    assert jobs.work(store, echo=lambda line: None) == [run.run_id]

    rows = lesson_prep.check(demo_dir, store)
    states = _states(rows)
    assert states[4] == states[5] == states[6] == states[8] == "ready"  # step 5: validation against test/
    assert states[3] == "missing" and states[7] == "missing" and "--occlude lungs" in rows[6]["command"]
    queued = lesson_prep.prepare(demo_dir, store, steps=[7], start=False)
    assert queued["queued"] == [] and len(queued["scorings"]) == 2
    jobs.work(store, echo=lambda line: None)
    reads.create_set(demo_dir, store, images=4)
    assert _states(lesson_prep.check(demo_dir, store))[7] == _states(lesson_prep.check(demo_dir, store))["read"] == "ready"


def test_lesson_check_says_how_long_a_training_run_has_left(demo_dir, tmp_path):
    import os
    import time

    from cxr_core import lesson_prep
    from cxr_core.registry import default_settings
    from cxr_core.store import atomic_write_json

    store = RunStore(tmp_path / "runs")
    run = store.new_run(default_settings("regularized_cnn").to_dict(), str(demo_dir.resolve()), state="running")
    store.set_status(run.run_id, pid=os.getpid(), started=time.time() - 60, epoch=2, batch=0, steps_per_epoch=4)
    atomic_write_json(run.path / "history.json", [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 30.0}])
    row = lesson_prep.check(demo_dir, store)[3]
    assert row["step"] == 4 and row["state"] == "training" and row["command"] is None
    assert "regularized_cnn (improved) epoch 2 of 12" in row["detail"] and "time left 5m 00s" in row["detail"]
