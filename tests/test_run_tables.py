"""run_tables: what pages and the CLI show about runs (progress, tables, curves, comparison)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from cxr_core import evaluate, run_tables
from cxr_core.config import UserError
from cxr_core.store import Run


def _fake_run(tmp_path, state="running", status=None, history=None, epochs=10) -> Run:
    path = tmp_path / "20260101-000000-regularized_cnn-abcd"
    path.mkdir()
    if history is not None:
        (path / "history.json").write_text(json.dumps(history))
    return Run(path.name, path, state, {"model": "regularized_cnn", "epochs": epochs}, status or {})


def test_progress_before_the_first_epoch_has_no_estimate(tmp_path):
    run = _fake_run(tmp_path, status={"started": time.time() - 20, "epoch": 0, "batch": 5, "steps_per_epoch": 10})
    progress = run_tables.training_progress(run, now=run.status["started"] + 20)
    assert progress["fraction"] == pytest.approx(0.05)
    assert progress["remaining_s"] is None and progress["remaining"] == "after epoch 1"
    assert progress["elapsed_s"] == pytest.approx(20) and progress["elapsed"] == "0m 20s"
    assert progress["text"] == "epoch 0 of 10, batch 5 of 10"


def test_progress_estimates_the_rest_from_the_mean_epoch(tmp_path):
    status = {"started": 1000.0, "epoch": 2, "batch": 0, "steps_per_epoch": 10}
    run = _fake_run(tmp_path, status=status, history=[{"epoch": 1, "seconds": 10.0}, {"epoch": 2, "seconds": 20.0}])
    progress = run_tables.training_progress(run, now=1030.0)
    assert progress["epoch"] == 2 and progress["epochs"] == 10
    assert progress["fraction"] == pytest.approx(0.2)
    assert progress["elapsed_s"] == pytest.approx(30.0)
    assert progress["remaining_s"] == pytest.approx(8 * 15.0) and progress["remaining"] == "2m 00s"


@pytest.mark.parametrize("seconds, text", [(0, "0m 00s"), (65.4, "1m 05s"), (3599.6, "1h 00m"), (3725, "1h 02m")])
def test_durations_read_as_minutes_and_seconds_or_hours_and_minutes(seconds, text):
    assert run_tables.format_duration(seconds) == text


def test_run_records_are_what_runs_json_prints(tiny_run, tmp_path):
    store, run_id = tiny_run
    record = next(r for r in run_tables.run_records(store.list()) if r["run"] == run_id)
    evaluation = store.get(run_id).evaluation("test")
    assert record["state"] == "done" and record["auc"] == evaluation["auc"] and record["progress"] is None
    assert record["evaluated_on"] == store.get(run_id).evaluation_sources("test") and record["synthetic"] is True
    running = _fake_run(tmp_path, status={"started": time.time() - 5, "epoch": 1, "pid": os.getpid()},
                        history=[{"epoch": 1, "seconds": 4.0}])
    assert run_tables.run_records([running])[0]["progress"].startswith("epoch 1 of 10, ")


def test_history_frame_splits_training_and_validation(tmp_path):
    run = _fake_run(tmp_path, history=[{"epoch": 1, "seconds": 1.0, "loss": 0.7, "val_loss": 0.8, "accuracy": 0.6}])
    frame = run_tables.history_frame({"A": run})
    assert set(frame["phase"]) == {"training", "validation"}
    assert frame.loc[(frame.metric == "loss") & (frame.phase == "validation"), "value"].item() == 0.8
    assert "seconds" not in set(frame["metric"])


def test_runs_table_and_metrics_table_show_the_stored_evaluation(tiny_run):
    store, run_id = tiny_run
    run = store.get(run_id)
    evaluation = run.evaluation("test")
    row = run_tables.runs_table(store.list()).set_index("run").loc[run_id]
    assert row["state"] == "done" and row["model"] == "regularized_cnn"
    assert row["accuracy"] == pytest.approx(evaluation["accuracy"])
    assert row["data"] == "SYNTHETIC demo"
    table = run_tables.metrics_table({"tiny": evaluation})
    assert table.loc[0, "auc"] == pytest.approx(evaluation["auc"])
    low, high = evaluation["ci95"]["sensitivity"]
    assert table.loc[0, "sensitivity_low"] == low and table.loc[0, "sensitivity_high"] == high
    assert run_tables.run_label(run).startswith("regularized_cnn · ")
    shown = run_tables.metrics_text(table).iloc[0]
    assert shown["sensitivity"] == evaluate.with_interval(evaluation["sensitivity"], (low, high))
    assert shown["threshold"] == f"{evaluation['threshold']:.3f}" and shown["images"] == evaluation["n"]


def test_published_table_carries_kermany():
    table = run_tables.published_table().set_index("name")
    kermany = table.loc["Kermany et al. 2018: Inception-V3 transfer"]
    assert kermany["sensitivity"] == 0.932 and kermany["specificity"] == 0.901 and kermany["auc"] == 0.968
    assert table["macro_f1"].dtype == float  # missing figures are NaN, not the text "None"


def test_confusion_cells_match_the_confusion_matrix():
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame({"path": [f"{i}.jpeg" for i in range(60)], "label": rng.integers(0, 2, 60),
                                "probability": rng.random(60)})
    (tn, fp), (fn, tp) = evaluate.confusion_at(predictions["label"], predictions["probability"], 0.4)
    counts = {cell: len(run_tables.confusion_cell(predictions, 0.4, cell)) for cell in run_tables.CELLS}
    assert counts == {"TN": tn, "FP": fp, "FN": fn, "TP": tp}
    missed = run_tables.confusion_cell(predictions, 0.4, "FN")
    assert missed["probability"].is_monotonic_increasing  # the most confident misses first
    alarms = run_tables.confusion_cell(predictions, 0.4, "FP")
    assert alarms["probability"].is_monotonic_decreasing


def test_align_predictions_keeps_the_images_both_runs_saw():
    a = pd.DataFrame({"path": ["x", "y", "z"], "label": [0, 1, 1], "probability": [0.1, 0.9, 0.8]})
    b = pd.DataFrame({"path": ["z", "y", "w"], "label": [1, 1, 0], "probability": [0.3, 0.6, 0.2]})
    both = run_tables.align_predictions(a, b).set_index("path")
    assert sorted(both.index) == ["y", "z"]
    assert both.loc["z", "probability_a"] == 0.8 and both.loc["z", "probability_b"] == 0.3
    assert run_tables.same_images([a, a.copy()]) and not run_tables.same_images([a, b])


def test_the_images_behind_an_evaluation_are_found_under_the_folder_it_was_scored_on(tmp_path):
    own, other = tmp_path / "own" / "chest_xray", tmp_path / "other"
    for folder in (own / "train" / "NORMAL", own / "test" / "NORMAL", other / "test" / "NORMAL"):
        folder.mkdir(parents=True)
    run = _fake_run(tmp_path)
    run.settings["data_dir"] = str(own.parent)  # the Kaggle nesting: chest_xray/ inside the folder given
    assert run_tables.image_root(run) == own
    assert run_tables.image_root(run, {"data_dir": None}) == own
    assert run_tables.image_root(run, {"data_dir": str(other)}) == other
    run.settings["data_dir"] = str(tmp_path / "moved")
    with pytest.raises(UserError, match="does not exist"):
        run_tables.image_root(run)


def test_held_out_images_are_the_test_folder_or_the_runs_own_test_split(tiny_run, tmp_path):
    import shutil

    import pandas as pd

    from cxr_core.data import scan_folder
    from cxr_core.store import RunStore

    store, run_id = tiny_run
    run = store.get(run_id)
    scan = scan_folder(run.settings["data_dir"])
    rows, what = run_tables.held_out_images([run], scan.manifest)
    assert what == "the test/ folder"
    assert set(rows["path"]) == set(scan.manifest.loc[scan.manifest.source_split == "test", "path"].astype(str))
    # A train-only folder: the run's own recorded test split, not a split drawn again with another seed.
    no_test = scan.manifest[scan.manifest.source_split == "train"]
    rows, what = run_tables.held_out_images([run], no_test)
    split = store.split(run_id)
    assert what == "the run's own test split"
    assert sorted(rows["path"]) == sorted(str(run_tables.image_root(run) / p)
                                          for p in split.loc[split.split == "test", "path"])
    # Two runs whose test splits differ: only the images both kept apart.
    other = RunStore(tmp_path / "runs")
    for name in ("a", "b"):
        shutil.copytree(run.path, other.root / name)
    split_b = pd.read_csv(other.root / "b" / "split.csv")
    dropped = split_b.loc[split_b.split == "test", "path"].iloc[0]
    split_b.loc[split_b.path == dropped, "split"] = "train"
    split_b.to_csv(other.root / "b" / "split.csv", index=False)
    rows, _ = run_tables.held_out_images([other.get("a"), other.get("b")], no_test)
    assert len(rows) == (split.split == "test").sum() - 1 and str(run_tables.image_root(run) / dropped) not in set(rows.path)


def test_the_own_test_split_is_named_for_what_it_is(tiny_run, tmp_path):
    import shutil

    import pandas as pd

    from cxr_core.store import RunStore

    store, run_id = tiny_run
    run = store.get(run_id)
    assert run_tables.evaluation_label(("test", "own"), [run]) == "test/ folder (the official split)"
    carved = RunStore(tmp_path / "carved")
    shutil.copytree(run.path, carved.root / run_id)
    split = pd.read_csv(carved.root / run_id / "split.csv")
    split.loc[split["split"] == "test", "source_split"] = "train"
    split.to_csv(carved.root / run_id / "split.csv", index=False)
    assert run_tables.evaluation_label(("test", "own"), [carved.get(run_id)]) == "test split carved from train"
    assert run_tables.evaluation_label(("test", "own"), [run, carved.get(run_id)]) == "test split carved from train"
    assert run_tables.evaluation_label(("val", "own"), [run]) == "own validation split"


def test_a_scored_folder_comes_before_a_carved_test_split(tiny_run, tmp_path):
    import json
    import shutil

    import pandas as pd

    from cxr_core.store import RunStore

    store, run_id = tiny_run
    carved = RunStore(tmp_path / "carved")
    shutil.copytree(store.run_path(run_id), carved.root / run_id)
    split = pd.read_csv(carved.root / run_id / "split.csv")
    split.loc[split["split"] == "test", "source_split"] = "train"
    split.to_csv(carved.root / run_id / "split.csv", index=False)
    assert run_tables.evaluation_choices([carved.get(run_id)])[0] == ("test", "own")  # nothing else scored yet
    evaluation = json.loads((carved.run_path(run_id) / "evaluation_test.json").read_text())
    (carved.run_path(run_id) / "evaluation_test@site.json").write_text(json.dumps(evaluation))
    assert run_tables.evaluation_choices([carved.get(run_id)])[0] == ("test", "site")
    assert run_tables.evaluation_choices([store.get(run_id)])[0] == ("test", "own")  # its test/ is the official one
