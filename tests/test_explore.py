"""Contracts of cxr_core.explore: what the Dataset explorer and the run tables show."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from cxr_core import data, evaluate, explore
from cxr_core.store import Run


@pytest.fixture(scope="module")
def demo_split(demo_dir):
    scan = data.scan_folder(demo_dir)
    return scan, data.assign_splits(scan.manifest, seed=42)


def _manifest(labels, patients=None, split=None) -> pd.DataFrame:
    labels = list(labels)
    return pd.DataFrame({
        "path": [f"/nowhere/{i}.jpeg" for i in range(len(labels))],
        "label": labels,
        "class_name": ["PNEUMONIA" if y else "NORMAL" for y in labels],
        "patient_id": patients or [f"p{i}" for i in range(len(labels))],
        "split": split or ["train"] * len(labels),
    })


def test_dataset_summary_counts_what_the_scan_found(demo_split):
    scan, _ = demo_split
    summary = explore.dataset_summary(scan)
    assert summary["synthetic"] is True
    assert summary["images"] == len(scan.manifest) == 120
    assert summary["classes"] == {"NORMAL": 60, "PNEUMONIA": 60}
    assert summary["official_splits"]["val"] == 0  # the demo has train/ and test/ only
    assert sum(summary["official_splits"].values()) == 120
    assert summary["patients"] == scan.manifest["patient_id"].nunique()


def test_always_pneumonia_accuracy_is_the_pneumonia_share():
    split = ["train"] * 8 + ["test"] * 4
    labels = [1, 1, 1, 1, 1, 1, 0, 0] + [1, 0, 0, 0]
    table = explore.class_balance(_manifest(labels, split=split)).set_index("split")
    assert table.loc["train", "always_pneumonia_accuracy"] == pytest.approx(0.75)
    assert table.loc["test", "always_pneumonia_accuracy"] == pytest.approx(0.25)
    assert table.loc["test", "majority_accuracy"] == pytest.approx(0.75)  # there NORMAL is the majority
    assert table.loc["all", "images"] == 12 and table.loc["all", "PNEUMONIA"] == 7
    assert "val" not in table.index  # an empty split gets no row


def test_images_per_patient_accounts_for_every_image(demo_split):
    _, split = demo_split
    table = explore.images_per_patient(split)
    for class_name, part in table.groupby("class_name"):
        assert (part["images_per_patient"] * part["patients"]).sum() == (split["class_name"] == class_name).sum()
    assert table["images_per_patient"].max() > 1  # the demo gives some children several X-rays


def test_a_random_image_split_leaks_patients_that_the_patient_split_keeps_apart(demo_split):
    scan, split = demo_split
    assert sum(data.patient_overlap(split).values()) == 0
    assert sum(explore.naive_split_leakage(scan.manifest, seed=0).values()) > 0


def test_gallery_respects_filters_and_seed(demo_split):
    _, split = demo_split
    sample = explore.sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=5, seed=1)
    assert 0 < len(sample) <= 5
    assert set(sample["class_name"]) == {"PNEUMONIA"} and set(sample["kind"]) == {"virus"}
    assert (sample["width"] == 96).all() and (sample["height"] == 96).all()
    assert (sample["file_kb"] > 0).all()
    assert sample["file_name"].str.endswith(".jpeg").all()
    again = explore.sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=5, seed=1)
    assert list(again["path"]) == list(sample["path"])
    other = explore.sample_gallery(split, n=12, seed=2)
    assert list(other["path"]) != list(explore.sample_gallery(split, n=12, seed=3)["path"])
    test_only = explore.sample_gallery(split, split="test", n=50)
    assert set(test_only["split"]) == {"test"}


def test_gallery_with_no_match_is_empty_not_an_error(demo_split):
    _, split = demo_split
    sample = explore.sample_gallery(split, class_name="NORMAL", kind="virus")
    assert sample.empty and {"file_name", "width", "height"} <= set(sample.columns)


def test_size_table_reads_headers_and_skips_unreadable_files(demo_split, tmp_path):
    scan, _ = demo_split
    bad = tmp_path / "IM-9999-0001.jpeg"
    bad.write_bytes(b"not an image at all")
    manifest = pd.concat([scan.manifest.head(10), pd.DataFrame([{"path": str(bad), "class_name": "NORMAL"}])])
    table = explore.image_size_table(manifest, n=50)
    assert len(table) == 10
    assert (table["aspect"] == 1.0).all() and set(table["format"]) == {"JPEG"}


def test_class_appearance_gives_a_mean_image_and_a_histogram_per_class(demo_split, tmp_path):
    scan, _ = demo_split
    bad = tmp_path / "person1_virus_1.jpeg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    manifest = pd.concat([scan.manifest, pd.DataFrame([{"path": str(bad), "class_name": "PNEUMONIA"}])])
    looks = explore.class_appearance(manifest, per_class=200, image_size=48)
    assert set(looks) == {"NORMAL", "PNEUMONIA"}
    assert looks["NORMAL"].images == 60 and looks["NORMAL"].failed == 0
    assert looks["PNEUMONIA"].images == 60 and looks["PNEUMONIA"].failed == 1
    for look in looks.values():
        assert look.mean_image.shape == (48, 48) and look.mean_image.dtype == np.uint8
        assert look.histogram.shape == (256,) and look.histogram.sum() == pytest.approx(1.0)
        assert look.mean_image.max() > 0


def _fake_run(tmp_path, state="running", status=None, history=None, epochs=10) -> Run:
    path = tmp_path / "20260101-000000-regularized_cnn-abcd"
    path.mkdir()
    if history is not None:
        (path / "history.json").write_text(json.dumps(history))
    return Run(path.name, path, state, {"model": "regularized_cnn", "epochs": epochs}, status or {})


def test_progress_before_the_first_epoch_has_no_estimate(tmp_path):
    run = _fake_run(tmp_path, status={"started": time.time() - 20, "epoch": 0, "batch": 5, "steps_per_epoch": 10})
    progress = explore.training_progress(run)
    assert progress["fraction"] == pytest.approx(0.05)
    assert progress["remaining_s"] is None
    assert 19 <= progress["elapsed_s"] <= 60


def test_progress_estimates_the_rest_from_the_mean_epoch(tmp_path):
    status = {"started": 1000.0, "epoch": 2, "batch": 0, "steps_per_epoch": 10}
    run = _fake_run(tmp_path, status=status, history=[{"epoch": 1, "seconds": 10.0}, {"epoch": 2, "seconds": 20.0}])
    progress = explore.training_progress(run, now=1030.0)
    assert progress["epoch"] == 2 and progress["epochs"] == 10
    assert progress["fraction"] == pytest.approx(0.2)
    assert progress["elapsed_s"] == pytest.approx(30.0)
    assert progress["remaining_s"] == pytest.approx(8 * 15.0)


def test_history_frame_splits_training_and_validation(tmp_path):
    run = _fake_run(tmp_path, history=[{"epoch": 1, "seconds": 1.0, "loss": 0.7, "val_loss": 0.8, "accuracy": 0.6}])
    frame = explore.history_frame({"A": run})
    assert set(frame["phase"]) == {"training", "validation"}
    assert frame.loc[(frame.metric == "loss") & (frame.phase == "validation"), "value"].item() == 0.8
    assert "seconds" not in set(frame["metric"])


def test_runs_table_and_metrics_table_show_the_stored_evaluation(tiny_run):
    store, run_id = tiny_run
    run = store.get(run_id)
    evaluation = run.evaluation("test")
    row = explore.runs_table(store.list()).set_index("run").loc[run_id]
    assert row["state"] == "done" and row["model"] == "regularized_cnn"
    assert row["accuracy"] == pytest.approx(evaluation["accuracy"])
    assert row["data"] == "SYNTHETIC demo"
    table = explore.metrics_table({"tiny": evaluation})
    assert table.loc[0, "auc"] == pytest.approx(evaluation["auc"])
    low, high = evaluation["ci95"]["sensitivity"]
    assert table.loc[0, "sensitivity_low"] == low and table.loc[0, "sensitivity_high"] == high
    assert explore.run_label(run).startswith("regularized_cnn · ")


def test_published_table_carries_kermany():
    table = explore.published_table().set_index("name")
    kermany = table.loc["Kermany et al. 2018: Inception-V3 transfer"]
    assert kermany["sensitivity"] == 0.932 and kermany["specificity"] == 0.901 and kermany["auc"] == 0.968
    assert table["macro_f1"].dtype == float  # missing figures are NaN, not the text "None"


def test_confusion_cells_match_the_confusion_matrix():
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame({"path": [f"{i}.jpeg" for i in range(60)], "label": rng.integers(0, 2, 60),
                                "probability": rng.random(60)})
    (tn, fp), (fn, tp) = evaluate.confusion_at(predictions["label"], predictions["probability"], 0.4)
    counts = {cell: len(explore.confusion_cell(predictions, 0.4, cell)) for cell in explore.CELLS}
    assert counts == {"TN": tn, "FP": fp, "FN": fn, "TP": tp}
    missed = explore.confusion_cell(predictions, 0.4, "FN")
    assert missed["probability"].is_monotonic_increasing  # the most confident misses first
    alarms = explore.confusion_cell(predictions, 0.4, "FP")
    assert alarms["probability"].is_monotonic_decreasing


def test_align_predictions_keeps_the_images_both_runs_saw():
    a = pd.DataFrame({"path": ["x", "y", "z"], "label": [0, 1, 1], "probability": [0.1, 0.9, 0.8]})
    b = pd.DataFrame({"path": ["z", "y", "w"], "label": [1, 1, 0], "probability": [0.3, 0.6, 0.2]})
    both = explore.align_predictions(a, b).set_index("path")
    assert sorted(both.index) == ["y", "z"]
    assert both.loc["z", "probability_a"] == 0.8 and both.loc["z", "probability_b"] == 0.3
    assert explore.same_images([a, a.copy()]) and not explore.same_images([a, b])
