"""Ensembles as runs: the mean of their members, thresholds on unseen images, taken by every command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from cxr_core import ensemble, explain, images, jobs, registry  # noqa: E402
from cxr_core.cli import main  # noqa: E402
from cxr_core.config import UserError  # noqa: E402
from cxr_core.evaluate import threshold_for  # noqa: E402
from cxr_core.inference import evaluate_run, load_run, predictions  # noqa: E402
from cxr_core.store import RunStore  # noqa: E402
from cxr_core.train import run_job  # noqa: E402


def tiny_settings(seed: int = 42):
    settings = registry.default_settings("regularized_cnn")
    settings.epochs, settings.image_size, settings.batch_size, settings.seed = 1, 32, 16, seed
    return settings


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    """`train --ensemble 2` as the worker runs it (one job), plus a run on another split: (store, ensemble id)."""
    store = RunStore(tmp_path_factory.mktemp("ensemble_runs"))
    run_id = ensemble.submit(tiny_settings(), 2, demo_dir, store, start=False)
    assert jobs.run_one(run_id, store, echo=lambda line: None) == "done", store.get(run_id).status
    return store, run_id


def test_train_ensemble_trains_members_on_one_split_with_different_seeds(trained):
    store, run_id = trained
    run = store.get(run_id)
    assert run.recipe == "ensemble" and run.state == "done" and len(run.settings["members"]) == 2
    members = [store.get(m) for m in run.settings["members"]]
    assert [m.settings["seed"] for m in members] == [42, 43]
    assert all(m.settings["split_seed"] == 42 for m in members)
    splits = [store.split(m.run_id).sort_values("path").reset_index(drop=True) for m in members]
    pd.testing.assert_frame_equal(splits[0], splits[1])


def test_the_ensembles_probability_is_the_members_mean_and_its_threshold_their_rule_on_validation(trained):
    store, run_id = trained
    members = store.get(run_id).settings["members"]
    own = predictions(run_id, "val", store).set_index("path")
    mean = sum(predictions(m, "val", store).set_index("path")["probability"] for m in members) / len(members)
    np.testing.assert_allclose(own["probability"], mean.loc[own.index], rtol=1e-5, atol=1e-6)
    rule = threshold_for(ensemble.rule_settings([store.get(m) for m in members]), own["label"].to_numpy(),
                         own["probability"].to_numpy())
    assert store.threshold(run_id) == pytest.approx(rule["threshold"])


def test_the_ensembles_heat_map_is_the_members_maps_averaged(trained, demo_dir):
    store, run_id = trained
    loaded = load_run(run_id, store)
    pixels = images.load_for_model(next((demo_dir / "test" / "PNEUMONIA").glob("*")), loaded.image_size)
    maps = [explain.gradcam(load_run(m, store).model, pixels, class_index=1)
            for m in store.get(run_id).settings["members"]]
    np.testing.assert_allclose(explain.gradcam(loaded.model, pixels, class_index=1), np.mean(maps, axis=0), atol=1e-5)


def test_the_lessons_sanity_check_randomizes_every_member(trained, demo_dir):
    from cxr_core.lesson import sanity_maps

    store, run_id = trained
    loaded = load_run(run_id, store)
    pixels = images.load_for_model(next((demo_dir / "test" / "NORMAL").glob("*")), loaded.image_size)
    maps = sanity_maps(loaded.model, explain.randomized_copy(loaded.model), pixels, "NORMAL")
    assert maps["trained"].shape == maps["randomized"].shape == (loaded.image_size,) * 2
    assert not np.allclose(maps["trained"], maps["randomized"], atol=1e-3)


def test_every_command_that_takes_a_run_takes_an_ensemble(trained, demo_dir, tmp_path, capsys):
    store, run_id = trained
    member = store.get(run_id).settings["members"][0]
    runs = ["--runs", str(store.root)]
    image = next((demo_dir / "test" / "NORMAL").glob("*"))
    assert main(["evaluate", run_id, "--split", "test", "--data", str(demo_dir), "--json", *runs]) == 0
    source = json.loads(capsys.readouterr().out)["source"]
    evaluate_run(member, "test", store, demo_dir)
    assert main(["compare", run_id, member, "--on", source, "--json", *runs]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {row["run"] for row in report["metrics"]} == {run_id, member} and "mcnemar" in report
    assert main(["predict", run_id, str(image), "--heatmap", str(tmp_path / "map.png"), *runs]) == 0
    assert (tmp_path / "map.png").stat().st_size > 0
    assert main(["report", run_id, member, "--on", source, "--out", str(tmp_path / "r.html"), *runs]) == 0
    assert run_id.rsplit("-", 1)[-1] in (tmp_path / "r.html").read_text()


def test_members_on_two_splits_choose_the_threshold_on_images_neither_trained_on(trained, demo_dir):
    store, run_id = trained
    first = store.get(run_id).settings["members"][0]
    other = jobs.submit(tiny_settings(seed=7), demo_dir, store, start=False)
    assert run_job(other, store, echo=lambda line: None) == "done"
    combined = ensemble.new_ensemble_run([first, other], "two_splits", store)
    split = store.split(combined)
    trained_on = set()
    for member in (first, other):
        member_split = store.split(member)
        trained_on |= set(member_split[member_split.split == "train"].path)
    chosen_on = set(split[split.split == "val"].path)
    assert chosen_on and not chosen_on & trained_on
    # Splits are by patient, so no child of the threshold images was trained on by any member either.
    assert store.get(combined).status["patient_overlap"]["train/val"] == 0
    assert set(predictions(combined, "val", store).path) == chosen_on


def test_an_imported_member_needs_a_declared_threshold_and_nothing_is_stored_when_refused(trained, tmp_path):
    from cxr_core.imported import InputHandling, import_model

    store, run_id = trained
    member = store.get(run_id).settings["members"][0]
    outside = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                                keras.layers.Dense(1, activation="sigmoid")])
    outside.save(tmp_path / "outside.keras")
    imported = import_model(tmp_path / "outside.keras", "outside", store, InputHandling())
    before = sorted(p.name for p in store.root.iterdir())
    with pytest.raises(UserError, match="--threshold"):
        ensemble.new_ensemble_run([member, imported], "mixed", store)
    assert sorted(p.name for p in store.root.iterdir()) == before
    mixed = ensemble.new_ensemble_run([member, imported], "mixed", store, threshold=0.4)
    assert store.threshold(mixed) == 0.4 and store.get(mixed).state == "done"


# ---------------------------------------------------------------- the pages take it


def test_compare_and_predict_pages_take_an_ensemble(trained, demo_dir, monkeypatch, app_page):
    from cxr_core import run_tables

    store, run_id = trained
    label = run_tables.run_label(store.get(run_id))
    member = run_tables.run_label(store.get(store.get(run_id).settings["members"][0]))
    at = app_page("pages/3_compare.py", store.root)
    at.multiselect[0].set_value([label, member]).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [row for frame in at.dataframe for row in frame.value.astype(str).to_numpy().ravel()]
    assert any(label in cell for cell in shown)

    at = app_page("pages/4_predict.py", store.root)
    at.selectbox[0].set_value(label).run()
    image = sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert label in {m.label for m in at.metric}
    assert any(c.startswith("Grad-CAM: evidence for") for img in at.image for c in img.captions)


def test_the_train_page_queues_an_ensemble_as_one_job(demo_dir, tmp_path, monkeypatch, app_page):

    monkeypatch.setattr(jobs, "spawn_worker", lambda store: None)
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    at = app_page("pages/2_train.py", tmp_path / "runs")
    [e for e in at.number_input if e.label.startswith("Ensemble members")][0].set_value(3)
    [e for e in at.button if e.label == "Train"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    (run,) = RunStore(tmp_path / "runs").list()
    assert run.state == "queued" and run.recipe == "ensemble" and run.settings["ensemble_size"] == 3


def test_a_training_ensemble_shows_which_member_trains(trained):
    from cxr_core.run_tables import training_progress
    from cxr_core.store import Run

    store, run_id = trained
    run = store.get(run_id)
    running = Run(run.run_id, run.path, "running", run.settings, {"member": 2, "started": 0.0})
    progress = training_progress(running, now=60.0)
    assert progress["text"] == "training member 2 of 2" and progress["fraction"] == 0.5


def test_validation_images_a_member_trained_on_never_choose_the_threshold(tmp_path):
    # The study's recipe trains on its validation images too (train_on_validation): they are not unseen.
    store = RunStore(tmp_path / "runs")
    split = pd.DataFrame({"path": [f"{c}/{i}.jpeg" for c in ("NORMAL", "PNEUMONIA") for i in range(6)],
                          "label": [0] * 6 + [1] * 6, "patient_id": [f"p{i}" for i in range(12)], "kind": "x",
                          "split": ["train", "train", "val", "val", "test", "test"] * 2})
    members = []
    for study in (False, True):
        run = store.new_run({"model": "regularized_cnn", "train_on_validation": study}, str(tmp_path), state="done")
        split.to_csv(run.path / "split.csv", index=False)
        members.append(store.get(run.run_id))
    unseen = ensemble.unseen_split(members, store)
    assert set(unseen[unseen.split == "val"].path) == set(split[split.split == "test"].path)
    assert ensemble.unseen_split(members[:1], store).equals(split)  # one plain member: its own validation split


def test_the_lessons_run_pickers_offer_an_ensemble(trained, demo_dir, monkeypatch, app_page):
    from cxr_core import lesson, run_tables

    store, run_id = trained
    offered = lesson.picker_runs(store, store.get(run_id).settings["data_dir"])
    assert offered[store.get(run_id).model].run_id == run_id
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    at = app_page("pages/5_lesson.py", store.root)
    at.query_params["step"] = "4"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (picker,) = [box for box in at.selectbox if box.label == "Run"]
    assert run_tables.run_label(store.get(run_id)) in picker.options
    picker.set_value(store.get(run_id).model).run()
    assert not at.exception, [e.value for e in at.exception]
    (picker,) = [box for box in at.selectbox if box.label == "Run"]
    assert picker.value == store.get(run_id).model and at.get("plotly_chart")  # its curves drawn
