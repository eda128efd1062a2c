"""Home shows the study at a glance: sample X-rays of each class, and the best finished run's figures
on the official test split (or "no runs yet" and the way to Train); `info` prints the same run."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from cxr_core import run_tables
from cxr_core.config import PROJECT_ROOT
from cxr_core.store import RunStore

streamlit_config.set_option("client.showErrorDetails", "full")


def open_home() -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def prose(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("subheader", "info", "caption", "markdown") for e in getattr(at, kind))


def page_links(at: AppTest) -> list[str]:
    return [element.proto.label for element in at.get("page_link")]


@pytest.fixture
def demo_data(demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    return demo_dir


def carved_copy(store: RunStore, run_id: str, root) -> RunStore:
    """A copy of the run as if its test split had been carved from train (a train-only folder)."""
    shutil.copytree(store.run_path(run_id), root / run_id)
    split = pd.read_csv(root / run_id / "split.csv")
    split.loc[split["split"] == "test", "source_split"] = "train"
    split.to_csv(root / run_id / "split.csv", index=False)
    return RunStore(root)


def test_home_with_no_runs_shows_sample_xrays_and_the_way_to_train(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    at = open_home()
    captions = [caption for image in at.image for caption in image.captions]
    assert captions == ["NORMAL (SYNTHETIC)"] * 3 + ["PNEUMONIA (SYNTHETIC)"] * 3
    assert "No runs yet" in prose(at)
    assert "official test split" not in prose(at)  # the demo set's test/ is drawn shapes, not the official split
    assert "Go to Train to start a run" in page_links(at)
    assert "AUC" not in {m.label for m in at.metric}


def test_home_shows_the_best_runs_official_figures(tiny_run, demo_data, monkeypatch):
    store, run_id = tiny_run
    monkeypatch.setenv("CXR_RUNS_DIR", str(store.root))
    evaluation = store.get(run_id).evaluation("test")
    at = open_home()
    shown = {m.label: m.value for m in at.metric}
    assert shown["AUC"] == f"{evaluation['auc']:.3f}" and shown["Accuracy"] == f"{evaluation['accuracy']:.3f}"
    assert shown["Sensitivity"] == f"{evaluation['sensitivity']:.3f}"
    assert shown["Specificity"] == f"{evaluation['specificity']:.3f}"
    text = prose(at)
    assert run_tables.run_label(store.get(run_id)) in text and "SYNTHETIC" in text
    assert "No runs yet" not in text and "Go to Train to start a run" not in page_links(at)


def two_runs(store: RunStore, run_id: str, root) -> RunStore:
    """Two copies of one run: "lucky" has the better test AUC and the worse validation AUC."""
    for name, val_auc, test_auc in (("lucky", 0.70, 0.99), ("steady", 0.90, 0.80)):
        shutil.copytree(store.run_path(run_id), root / name)
        for split, auc in (("val", val_auc), ("test", test_auc)):
            path = root / name / f"evaluation_{split}.json"
            path.write_text(json.dumps(dict(json.loads(path.read_text()), auc=auc)))
    return RunStore(root)


def test_best_run_is_chosen_on_validation_not_on_the_test_figures_it_shows(tiny_run, tmp_path):
    store, run_id = tiny_run
    runs = two_runs(store, run_id, tmp_path / "two")
    best = run_tables.best_run(runs.list())
    assert best["run"] == "steady" and best["validation_auc"] == 0.90 and best["auc"] == 0.80
    assert "validation" in best["rule"]


def test_a_run_that_trained_on_its_validation_split_is_never_chosen_by_it(tiny_run, tmp_path):
    store, run_id = tiny_run
    runs = two_runs(store, run_id, tmp_path / "two")
    settings = runs.run_path("steady") / "settings.json"
    settings.write_text(json.dumps(dict(json.loads(settings.read_text()), train_on_validation=True)))
    assert run_tables.best_run(runs.list())["run"] == "lucky"


def test_home_and_info_show_the_run_chosen_on_validation(tiny_run, demo_data, tmp_path, monkeypatch, cli):
    store, run_id = tiny_run
    runs = two_runs(store, run_id, tmp_path / "two")
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs.root))
    at = open_home()
    assert {m.label: m.value for m in at.metric}["AUC"] == "0.800"
    assert "steady" in prose(at) and "chosen on validation" in prose(at)
    done = cli("info", "--data", demo_data, "--runs", runs.root, "--json")
    assert json.loads(done.stdout)["best_run"]["run"] == "steady", done.stderr


def test_best_run_needs_official_figures(tiny_run, tmp_path):
    store, run_id = tiny_run
    run = store.get(run_id)
    assert run_tables.own_test_is_official(run)  # the demo set keeps its test/ folder
    best = run_tables.best_run(store.list(), run.settings["data_dir"])
    assert best["run"] == run_id and best["source"] == "own" and best["auc"] == run.evaluation("test")["auc"]
    assert run_tables.best_run(store.list(), tmp_path) is None  # trained on another folder

    carved = carved_copy(store, run_id, tmp_path / "carved")
    assert run_tables.best_run(carved.list()) is None  # a carved split flatters: not the official figures
    evaluation = dict(run.evaluation("test"), auc=0.5, n=10)
    (carved.run_path(run_id) / "evaluation_test@half.json").write_text(json.dumps(evaluation))
    (carved.run_path(run_id) / "evaluation_test@whole.json").write_text(json.dumps(dict(evaluation, auc=0.6, n=20)))
    (carved.run_path(run_id) / "evaluation_test@whole+occlude-lungs.json").write_text(json.dumps(dict(evaluation, n=99)))
    best = run_tables.best_run(carved.list())
    assert best["source"] == "whole" and best["auc"] == 0.6 and best["n"] == 20  # the whole split over a half


def test_info_prints_the_best_run(tiny_run, demo_dir, tmp_path, cli):
    store, run_id = tiny_run
    done = cli("info", "--data", demo_dir, "--runs", store.root, "--json")
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)["best_run"]
    assert best["run"] == run_id and best["auc"] == pytest.approx(store.get(run_id).evaluation("test")["auc"])
    plain = cli("info", "--data", demo_dir, "--runs", store.root)
    assert f"best run: {run_id}" in plain.stdout
    empty = cli("info", "--data", demo_dir, "--runs", tmp_path / "none", "--json")
    assert json.loads(empty.stdout)["best_run"] is None
