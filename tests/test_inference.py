"""Contracts of cxr_core.inference: a loaded run predicts files and uploads as its evaluation scored them,
a batch answers as single images do, heat maps come with the call the model made, evaluations on
the run's own split or on other folders are stored apart, and, under load, several threads predict
with one run while a training job runs in a worker process: all answer correctly."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cxr_core import images, inference, jobs
from cxr_core.config import CLASSES, UserError
from cxr_core.demo import write_demo_dataset
from cxr_core.inference import evaluate_run, load_run, predict_image, predictions
from cxr_core.registry import default_settings
from cxr_core.store import OWN, RunStore

THREADS = 6
PER_THREAD = 8


@pytest.fixture(scope="module")
def loaded(tiny_run):
    store, run_id = tiny_run
    return load_run(run_id, store)


@pytest.fixture
def private(tiny_run, tmp_path) -> tuple[RunStore, str]:
    """A copy of the tiny run in a store of its own, for tests that write evaluations: (store, run_id)."""
    store, run_id = tiny_run
    own = RunStore(tmp_path / "runs")
    shutil.copytree(store.run_path(run_id), own.root / run_id)
    return own, run_id


def demo_files(demo_dir: Path, class_name: str, n: int) -> list[str]:
    return sorted(str(p) for p in (demo_dir / "test" / class_name).glob("*.jpeg"))[:n]


def class_folders(source: Path, dest: Path, n_pneumonia: int | None = None) -> Path:
    """dest/NORMAL and dest/PNEUMONIA copied from a data set's test/ (the first n_pneumonia of those)."""
    shutil.copytree(source / "test" / "NORMAL", dest / "NORMAL")
    (dest / "PNEUMONIA").mkdir()
    for path in sorted((source / "test" / "PNEUMONIA").glob("*.jpeg"))[:n_pneumonia]:
        shutil.copy(path, dest / "PNEUMONIA")
    return dest


# ---------------------------------------------------------------- loading a run


def test_a_loaded_run_carries_its_model_threshold_size_and_check(tiny_run, loaded):
    store, run_id = tiny_run
    run = store.get(run_id)
    assert loaded.run_id == run_id and loaded.model_name == "regularized_cnn"
    assert loaded.image_size == run.settings["image_size"] == 64
    assert loaded.model.input_shape == (None, 64, 64, 1)
    assert loaded.threshold == json.loads((run.path / "threshold.json").read_text())["threshold"]
    assert loaded.ood is not None


def test_the_model_key_changes_when_the_model_file_is_replaced(private):
    store, run_id = private
    key = inference.model_key(run_id, store)
    assert key.startswith(f"{run_id}:") and inference.model_key(run_id, store) == key
    model = store.run_path(run_id) / "model.keras"
    later = model.stat().st_mtime_ns + 10**9  # as a model written again a second later
    os.utime(model, ns=(later, later))
    assert inference.model_key(run_id, store) != key
    model.unlink()
    assert inference.model_key(run_id, store) == f"{run_id}:missing"


# ---------------------------------------------------------------- predicting


def test_a_file_and_its_bytes_get_the_probability_the_evaluation_gave_them(tiny_run, loaded):
    store, run_id = tiny_run
    root = store.get(run_id).settings["data_dir"]
    stored = predictions(run_id, "test", store).head(4)
    for row in stored.itertuples():
        path = f"{root}/{row.path}"
        from_path = predict_image(loaded, path)
        from_bytes = predict_image(loaded, Path(path).read_bytes(), name="upload.jpeg")
        assert from_path["file"] == path and from_bytes["file"] == "upload.jpeg"
        assert from_path["probability"] == pytest.approx(row.probability, abs=1e-5)  # one decoder, one preprocessing
        assert from_bytes["probability"] == pytest.approx(from_path["probability"], abs=1e-6)
        assert from_path["threshold"] == loaded.threshold
        assert from_path["label"] == CLASSES[int(from_path["probability"] >= loaded.threshold)]


def test_a_batch_gives_each_image_the_probability_it_gets_alone(loaded, demo_dir):
    files = demo_files(demo_dir, "NORMAL", 3) + demo_files(demo_dir, "PNEUMONIA", 3)
    batch = np.stack([images.load_for_model(f, loaded.image_size) for f in files])
    together = inference.probabilities(loaded, batch)
    assert together.shape == (len(files),)
    alone = [inference.probabilities(loaded, pixels[None])[0] for pixels in batch]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_predict_files_keeps_the_order_and_reports_unreadable_files(loaded, demo_dir, tmp_path):
    good = demo_files(demo_dir, "NORMAL", 1) + demo_files(demo_dir, "PNEUMONIA", 1)
    text = tmp_path / "notes.jpeg"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.png"
    files = [good[0], str(text), str(missing), good[1]]
    results = inference.predict_files(loaded, files)
    assert [r["file"] for r in results] == files
    for result, path in zip(results[1:3], (text, missing)):
        assert set(result) == {"file", "error"} and str(path) in result["error"]
    for result, path in zip((results[0], results[3]), good):
        assert result == predict_image(loaded, path, name=path)


def test_analyse_adds_the_heat_map_of_the_call_it_made(loaded, demo_dir):
    content = Path(demo_files(demo_dir, "PNEUMONIA", 1)[0]).read_bytes()
    result = inference.analyse(loaded, content, name="xray.jpeg")
    plain = predict_image(loaded, content, name="xray.jpeg")
    assert {key: result[key] for key in plain} == plain
    assert result["model"] == "regularized_cnn" and "heatmap_error" not in result
    heatmap = np.asarray(result["heatmap"])
    assert heatmap.shape == (64, 64) and heatmap.min() >= 0 and heatmap.max() <= 1


def test_a_heat_map_that_cannot_be_made_is_reported_with_the_prediction(loaded, demo_dir, monkeypatch):
    from cxr_core import explain

    asked = []

    def refuse(model, pixels, class_index=None):
        asked.append(class_index)
        raise ValueError("no convolution to explain")

    monkeypatch.setattr(explain, "gradcam", refuse)
    result = inference.analyse(loaded, demo_files(demo_dir, "NORMAL", 1)[0])
    assert result["heatmap"] is None and result["heatmap_error"] == "no convolution to explain"
    assert asked == [CLASSES.index(result["label"])]  # evidence for the label at the run's own threshold
    assert result["model"] == "regularized_cnn" and result["label"] in CLASSES


# ---------------------------------------------------------------- evaluating


def test_the_stored_evaluation_is_returned_unless_asked_to_recompute(private):
    store, run_id = private
    stored = store.get(run_id).evaluation("test")
    path = store.run_path(run_id) / "evaluation_test.json"
    written = path.stat().st_mtime_ns
    assert evaluate_run(run_id, "test", store) == stored
    assert path.stat().st_mtime_ns == written  # nothing was scored again
    again = evaluate_run(run_id, "test", store, recompute=True)
    assert path.stat().st_mtime_ns != written
    assert again["source"] == OWN and again["n"] == stored["n"]
    assert again["confusion_matrix"] == stored["confusion_matrix"]  # the saved model answers as the trained one
    assert again["auc"] == pytest.approx(stored["auc"], abs=1e-6)


def test_a_folder_with_only_the_official_test_split_is_scored_whole(private, tmp_path):
    store, run_id = private
    other = write_demo_dataset(tmp_path / "other", n_normal=12, n_pneumonia=14, seed=9, image_size=64)
    shutil.rmtree(other / "train")  # a withheld test set
    n_test = len(list((other / "test").rglob("*.jpeg")))
    result = evaluate_run(run_id, "test", store, other)
    (tn, fp), (fn, tp) = result["confusion_matrix"]
    assert result["n"] == tn + fp + fn + tp == n_test
    assert tn + fp == len(list((other / "test" / "NORMAL").glob("*.jpeg")))
    assert result["source"] == "other" and store.get(run_id).evaluation("test", "other") == result
    assert len(predictions(run_id, "test", store, "other")) == n_test
    with pytest.raises(UserError, match="no 'val' images .* pass --split"):
        evaluate_run(run_id, "val", store, other)


def test_each_other_folder_is_stored_under_its_own_key_and_the_runs_own_folder_is_its_split(private, tmp_path):
    store, run_id = private
    before = store.get(run_id).evaluation("test")
    source = write_demo_dataset(tmp_path / "gen", n_normal=20, n_pneumonia=24, seed=5, image_size=64)
    folder = class_folders(source, tmp_path / "a" / "hospital_b")  # only class folders, as an export might be
    twin = class_folders(source, tmp_path / "b" / "hospital_b", n_pneumonia=1)  # same name, another folder
    first = evaluate_run(run_id, "test", store, folder)
    second = evaluate_run(run_id, "test", store, twin)
    assert first["source"] == "hospital_b" and first["n"] == len(list(folder.rglob("*.jpeg")))
    assert second["source"].startswith("hospital_b-") and second["n"] == len(list(twin.rglob("*.jpeg"))) < first["n"]
    run = store.get(run_id)
    assert run.evaluation("test", "hospital_b") == first  # the first folder's evaluation stays
    assert run.evaluation("test") == before  # and so does the run's own
    sources = run.evaluation_sources("test")
    assert sources[0] == OWN and set(sources) == {OWN, "hospital_b", second["source"]}

    # The run's own data folder given as "another folder" is its own split, not a new key.
    same = evaluate_run(run_id, "test", store, run.settings["data_dir"])
    assert same["source"] == OWN and same == before
    assert set(store.get(run_id).evaluation_sources("test")) == set(sources)


def test_predictions_are_read_back_per_split_and_source(tiny_run):
    store, run_id = tiny_run
    evaluation = store.get(run_id).evaluation("test")
    table = predictions(run_id, "test", store)
    assert len(table) == evaluation["n"]
    assert {"path", "label", "probability", "predicted"} <= set(table.columns)
    assert ((table["probability"] >= evaluation["threshold"]).astype(int) == table["predicted"]).all()
    assert predictions(run_id, "train", store) is None  # training images are not scored
    assert predictions(run_id, "test", store, "nowhere") is None


@pytest.mark.parametrize("split, options, message", [
    ("holdout", {}, "unknown split 'holdout'; use one of train, val, test"),
    ("test", {"occlusion": "heart"}, "unknown occlusion 'heart'; use one of lungs, outside"),
])
def test_unknown_splits_and_occlusions_are_user_errors(tiny_run, split, options, message):
    store, run_id = tiny_run
    with pytest.raises(UserError, match=message):
        evaluate_run(run_id, split, store, **options)


def test_images_missing_from_the_runs_folder_say_which_and_what_to_do(private, demo_dir, tmp_path):
    store, run_id = private
    moved = tmp_path / "moved"
    shutil.copytree(demo_dir, moved)
    split = store.split(run_id)
    (moved / split.path[split.split == "test"].iloc[0]).unlink()
    settings_path = store.run_path(run_id) / "settings.json"
    settings_path.write_text(json.dumps(dict(json.loads(settings_path.read_text()), data_dir=str(moved))))
    with pytest.raises(UserError, match="1 images of the test split are missing under .* pass --data"):
        evaluate_run(run_id, "test", store, recompute=True)


# ---------------------------------------------------------------- under load


def test_predictions_during_training(tiny_run, demo_dir, tmp_path):
    store, run_id = tiny_run
    loaded = load_run(run_id, store)
    files = sorted(str(p) for p in (demo_dir / "test").rglob("*.jpeg"))[: THREADS * PER_THREAD]
    assert len(files) >= THREADS * 2
    reference = {f: predict_image(loaded, f)["probability"] for f in files}

    train_store = RunStore(tmp_path / "runs")
    settings = default_settings("baseline_cnn")
    settings.epochs, settings.image_size, settings.batch_size = 400, 48, 16  # stopped once the predictions overlapped it
    settings.augment, settings.early_stopping_patience = False, 0
    training = jobs.submit(settings, demo_dir, train_store, start=False)
    worker = jobs.spawn_worker(train_store)
    try:
        deadline = time.time() + 120
        status_path = train_store.run_path(training) / "status.json"
        while time.time() < deadline:
            try:
                if json.loads(status_path.read_text()).get("epoch", 0) >= 1:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert train_store.get(training).state == "running"

        results: list[dict] = []
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def session(index: int) -> None:
            mine = files[index::THREADS]
            try:
                start.wait()
                for k, path in enumerate(mine):
                    # Half the "uploads" arrive as bytes, as st.file_uploader gives them.
                    source = path if k % 2 else Path(path).read_bytes()
                    results.append(predict_image(loaded, source, name=path))
            except BaseException as error:  # noqa: BLE001 - any failure is the finding
                errors.append(error)

        threads = [threading.Thread(target=session, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a prediction hung"
        assert errors == []
        assert len(results) == len(files)
        for result in results:
            assert abs(result["probability"] - reference[result["file"]]) < 1e-5  # no cross-talk between threads
            assert result["label"] == CLASSES[int(result["probability"] >= loaded.threshold)]
        assert train_store.get(training).state == "running"  # the predictions overlapped the training
        # Its end is test_jobs' and test_train's business: stopped here, not waited for.
        jobs.cancel(training, train_store)
        assert jobs.wait(training, train_store, timeout=120) == "cancelled"
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_refused_image_is_shown_withheld_and_its_row_keeps_the_check(loaded, demo_dir):
    xray = predict_image(loaded, demo_files(demo_dir, "NORMAL", 1)[0])
    refused = dict(xray, in_distribution=False, warning="colour image: chest X-rays are grayscale")
    assert inference.shown_label(xray) == xray["label"] in CLASSES
    assert inference.shown_label(refused) == inference.WITHHELD
    assert inference.shown_label(dict(xray, in_distribution=None)) == xray["label"]  # a run without the check
    row = inference.batch_row("holiday.png", "run A", refused)
    assert row["label"] == "withheld" and row["in_distribution"] is False and "colour" in row["warning"]
    assert (row["probability"], row["threshold"], row["error"]) == (xray["probability"], xray["threshold"], "")
    failed = inference.batch_row("notes.jpeg", error="notes.jpeg: the bytes are text")
    assert failed["label"] == "" and failed["probability"] is None and failed["error"].startswith("notes.jpeg")
    assert set(failed) <= set(row)  # one table for both


def test_a_batch_with_two_files_of_one_name_tells_them_apart():
    named = inference.unique_names([("image.jpg", b"a"), ("other.png", b"b"), ("image.jpg", b"c"), ("image.jpg", b"d")])
    assert named == [("image.jpg", b"a"), ("other.png", b"b"), ("image.jpg (2)", b"c"), ("image.jpg (3)", b"d")]


def test_bytes_without_a_name_are_called_upload_not_their_contents(loaded, demo_dir):
    content = Path(demo_files(demo_dir, "NORMAL", 1)[0]).read_bytes()
    assert predict_image(loaded, content)["file"] == "upload"
    assert predict_image(loaded, content, name="film.png")["file"] == "film.png"


# ---------------------------------------------------------------- site calibration (--threshold-from)


def split_folder(source: Path, site: Path, sample: Path, n_sample: int) -> None:
    """Each class of source/test split in two by patient: the first patients up to n_sample images to
    `sample`, the other patients to `site` (a child in both would leak its answer)."""
    from cxr_core.data import parse_name

    for label, name in enumerate(CLASSES):
        files = sorted((source / "test" / name).glob("*.jpeg"))
        patients = list(dict.fromkeys(parse_name(path.name, label)[0] for path in files))
        taken = set()
        for patient in patients[:-1]:  # the last child always stays with the site
            if sum(parse_name(f.name, label)[0] in taken | {patient} for f in files) > n_sample:
                break
            taken.add(patient)
        for dest, keep in ((sample, True), (site, False)):
            (dest / name).mkdir(parents=True, exist_ok=True)
            for path in files:
                if (parse_name(path.name, label)[0] in taken) == keep:
                    shutil.copy(path, dest / name)


def test_site_calibration_scores_at_the_threshold_that_meets_the_target_on_the_sample(private, tmp_path):
    from cxr_core.calibration import site_threshold
    from cxr_core.evaluate import evaluate_predictions

    store, run_id = private
    source = write_demo_dataset(tmp_path / "gen", n_normal=24, n_pneumonia=24, seed=11, image_size=64)
    site, sample = tmp_path / "site", tmp_path / "sample"
    split_folder(source, site, sample, n_sample=5)
    # What the right threshold is: the sample scored as a plain folder, the rule applied by hand.
    plain_sample = evaluate_run(run_id, "test", store, sample)
    scored = predictions(run_id, "test", store, plain_sample["source"])
    expected = site_threshold(scored["label"], scored["probability"], 0.95)["threshold"]

    result = evaluate_run(run_id, "test", store, site, threshold_from=sample)
    assert result["threshold"] == pytest.approx(expected)
    assert result["source"] == "site+threshold-from-sample"
    assert result["threshold_source"] == "labelled folder sample"
    assert result["threshold_from"]["n"] == len(scored) and result["threshold_from"]["sensitivity"] >= 0.95
    site_predictions = predictions(run_id, "test", store, result["source"])
    again = evaluate_predictions(site_predictions["label"], site_predictions["probability"], expected)
    assert result["confusion_matrix"] == again["confusion_matrix"]
    # Stored beside, never over, the plain evaluation at the run's own threshold.
    plain = evaluate_run(run_id, "test", store, site)
    assert plain["threshold"] == pytest.approx(store.threshold(run_id)) and plain["threshold_source"] == "validation"
    assert {plain["source"], result["source"]} <= set(store.get(run_id).evaluation_sources("test"))


def test_site_calibration_on_the_scored_images_is_refused(private, tmp_path):
    store, run_id = private
    source = write_demo_dataset(tmp_path / "gen", n_normal=24, n_pneumonia=24, seed=12, image_size=64)
    site, sample = tmp_path / "site", tmp_path / "sample"
    split_folder(source, site, sample, n_sample=3)
    with pytest.raises(UserError, match="shares .* images with the scored folder"):
        evaluate_run(run_id, "test", store, site, threshold_from=site)
    leaked = next((site / "NORMAL").glob("*.jpeg"))
    shutil.copy(leaked, sample / "NORMAL" / "renamed-copy.jpeg")  # the same image under another name
    with pytest.raises(UserError, match="shares 1 images"):
        evaluate_run(run_id, "test", store, site, threshold_from=sample)
    for name in CLASSES:
        shutil.rmtree(sample / name)
    (sample / "NORMAL").mkdir()
    shutil.copy(next((source / "train" / "NORMAL").glob("*.jpeg")), sample / "NORMAL")
    with pytest.raises(UserError, match="both classes"):
        evaluate_run(run_id, "test", store, site, threshold_from=sample)
    with pytest.raises(UserError, match="separately"):
        evaluate_run(run_id, "test", store, site, threshold_from=sample, occlusion="lungs")
    assert not any("threshold-from" in s for s in store.get(run_id).evaluation_sources("test"))


def test_site_calibration_on_another_image_of_a_scored_child_is_refused(private, tmp_path):
    store, run_id = private
    source = write_demo_dataset(tmp_path / "gen", n_normal=24, n_pneumonia=24, seed=12, image_size=64)
    site, sample = tmp_path / "site", tmp_path / "sample"
    split_folder(source, site, sample, n_sample=3)
    # A different film (another child's pixels) under the name of a child the site folder holds.
    scored_child = sorted((site / "PNEUMONIA").glob("person*.jpeg"))[0].name.split("_")[0]
    shutil.copy(next((source / "train" / "PNEUMONIA").glob("*.jpeg")),
                sample / "PNEUMONIA" / f"{scored_child}_bacteria_999.jpeg")
    with pytest.raises(UserError, match=f"shares 1 patients with the scored images \\(e.g. {scored_child}\\)"):
        evaluate_run(run_id, "test", store, site, threshold_from=sample)
    assert not any("threshold-from" in s for s in store.get(run_id).evaluation_sources("test"))


def test_site_calibration_applies_to_the_runs_own_folder_too(private, tmp_path):
    # `--data` naming the run's own folder scores its own test split; --threshold-from must still apply.
    store, run_id = private
    own_folder = store.get(run_id).settings["data_dir"]
    plain = evaluate_run(run_id, "test", store, own_folder)
    other = write_demo_dataset(tmp_path / "gen", n_normal=12, n_pneumonia=12, seed=21, image_size=64)
    sample = tmp_path / "sample"
    for name in CLASSES:  # names no Kaggle pattern reads: each film is its own patient
        (sample / name).mkdir(parents=True)
        for i, path in enumerate(sorted((other / "test" / name).glob("*.jpeg"))):
            shutil.copy(path, sample / name / f"site-{name.lower()}-{i}.jpeg")
    result = evaluate_run(run_id, "test", store, own_folder, threshold_from=sample)
    assert result["source"] == "own+threshold-from-sample" and result["threshold_source"] == "labelled folder sample"
    assert result["n"] == plain["n"] and result["threshold_from"]["n"] == len(list(sample.rglob("*.jpeg")))
    assert store.get(run_id).evaluation("test")["threshold_source"] == "validation"  # the own one untouched
