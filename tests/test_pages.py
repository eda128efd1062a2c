"""Every dashboard page under streamlit.testing.v1.AppTest: empty states, the tiny run, interactions.

Pages read their configuration from the environment (CXR_RUNS_DIR, CXR_DATA_DIR,
CXR_DATA_ROOTS), so each test points them at its own store with monkeypatch.
Assertions are on what a person sees: titles, messages, metric values, tables.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from cxr_core import calibration, data, evaluate, explore, inference, jobs, lesson, registry, run_tables
from cxr_core.config import PROJECT_ROOT
from cxr_core.registry import STUDY_MODELS, default_settings, descriptions
from cxr_core.store import RunStore

APP = PROJECT_ROOT / "app.py"
DATASET, TRAIN, COMPARE, PREDICT, LESSON = (f"pages/{name}.py" for name in
                                            ("1_dataset", "2_train", "3_compare", "4_predict", "5_lesson"))
TIMEOUT = 90  # the first TensorFlow import and model load are slow on two cores

# .streamlit/config.toml hides error details from users; tests need them to say what broke.
streamlit_config.set_option("client.showErrorDetails", "full")


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page:
        at.switch_page(page).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, "\n".join(f"{e.value}\n{''.join(e.stack_trace)}" for e in at.exception)


def texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def shown(at: AppTest) -> str:
    """All prose on the page, to search for a sentence."""
    kinds = ("title", "header", "subheader", "markdown", "caption", "info", "warning", "success", "error")
    return "\n".join(text for kind in kinds for text in texts(at, kind))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def widget(elements, label: str):
    matches = [e for e in elements if e.label == label]
    assert matches, f"no widget labelled {label!r} among {[e.label for e in elements]}"
    return matches[0]


@pytest.fixture
def empty_store(tmp_path, monkeypatch) -> RunStore:
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path / "runs"))
    return RunStore(tmp_path / "runs")


@pytest.fixture
def demo_data(demo_dir, monkeypatch):
    """Pages on the small session demo set (SYNTHETIC, like the default one)."""
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    return demo_dir


@pytest.fixture
def tiny_store(tiny_run, monkeypatch):
    store, run_id = tiny_run
    monkeypatch.setenv("CXR_RUNS_DIR", str(store.root))
    return store, run_id


@pytest.fixture
def two_runs(tiny_run, tmp_path, monkeypatch):
    """A private store with the tiny run and a copy whose test predictions differ (no extra training)."""
    store, run_id = tiny_run
    root = tmp_path / "two_runs"
    shutil.copytree(store.root / run_id, root / run_id)
    twin = run_id.rsplit("-", 1)[0] + "-beef"
    shutil.copytree(store.root / run_id, root / twin)
    status = json.loads((root / twin / "status.json").read_text())
    (root / twin / "status.json").write_text(json.dumps(dict(status, created=status["created"] + 1)))
    predictions = pd.read_csv(root / twin / "predictions_test.csv")
    predictions["probability"] = np.where(predictions.index % 3 == 0, 1 - predictions["probability"],
                                          predictions["probability"])
    predictions.to_csv(root / twin / "predictions_test.csv", index=False)
    monkeypatch.setenv("CXR_RUNS_DIR", str(root))
    return RunStore(root), run_id, twin


@pytest.fixture
def no_worker(monkeypatch):
    """Record worker starts instead of training in the background."""
    started = []
    monkeypatch.setattr(jobs, "spawn_worker", lambda store: started.append(store.root))
    return started


def called(store, run_id, probability: float) -> str:
    """The class a run calls at its own threshold: what every page must show for that probability."""
    threshold = json.loads((store.get(run_id).path / "threshold.json").read_text())["threshold"]
    return "PNEUMONIA" if probability >= threshold else "NORMAL"


def xray_bytes(demo_dir, name="PNEUMONIA") -> tuple[str, bytes]:
    path = sorted((demo_dir / "test" / name).glob("*.jpeg"))[0]
    return path.name, path.read_bytes()


def dicom_bytes(pixels: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CR", *pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---------------------------------------------------------------- Home and the data chooser


def test_home_on_the_default_demo_set_with_no_runs(empty_store):
    at = open_app()
    assert texts(at, "title") == ["Chest X-ray pneumonia study"]
    assert any("Not for clinical use" in text for text in texts(at, "error"))
    assert any("SYNTHETIC" in text for text in texts(at, "warning"))
    values = metrics(at)
    assert values["Images"] == "300" and values["NORMAL"] == "150" and values["PNEUMONIA"] == "150"
    assert values["Runs"] == "0" and values["Finished"] == "0"
    assert "No runs yet" in shown(at)
    assert at.sidebar.selectbox[0].value == "Demo data set (SYNTHETIC)"
    assert [code.value for code in at.code] == ["python -m cxr_core download"]  # how to get the real data


def test_home_on_real_data_does_not_offer_the_download(empty_store, demo_dir, tmp_path, monkeypatch):
    real = shutil.copytree(demo_dir, tmp_path / "chest_xray", ignore=shutil.ignore_patterns("SYNTHETIC_DEMO.txt"))
    monkeypatch.setenv("CXR_DATA_DIR", str(real))
    at = open_app()
    assert any("Real images from `chest_xray`" in text for text in texts(at, "success"))  # no server path
    assert not at.code


def test_home_counts_the_finished_run(tiny_store, demo_data):
    values = metrics(open_app())
    assert values["Runs"] == "1" and values["Finished"] == "1"
    assert values["Images"] == "120"


def test_a_missing_data_folder_is_a_message_and_the_demo_is_one_click_away(empty_store, monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "not_there"))
    at = open_app()
    assert any("cannot be used" in text and "does not exist" in text for text in texts(at, "warning"))
    assert not at.metric  # no counts of a data set that is not there
    at.sidebar.selectbox[0].select("Demo data set (SYNTHETIC)").run()
    assert_clean(at)
    assert metrics(at)["Images"] == "300"


def test_the_data_chooser_offers_only_configured_folders(empty_store, demo_data, tmp_path, monkeypatch):
    extra = tmp_path / "other_root"
    monkeypatch.setenv("CXR_DATA_ROOTS", str(extra))
    at = open_app()
    chooser = at.sidebar.selectbox[0]
    # Named without the server's own (temporary) folders.
    assert chooser.options == ["chest_xray (chest_xray)", "other_root (other_root)", "Demo data set (SYNTHETIC)"]
    assert not at.sidebar.text_input  # no free-text path on the server's disk


# ---------------------------------------------------------------- Dataset


def test_dataset_page_shows_counts_leakage_and_a_gallery(empty_store, demo_data):
    at = open_app(DATASET)
    values = metrics(at)
    assert values["PNEUMONIA : NORMAL"] == "1.0 : 1"
    assert values["Accuracy of always answering PNEUMONIA"] == "50.0%"
    assert any("Leakage check passed" in text for text in texts(at, "success"))
    assert any("A random split by image instead would share" in text for text in texts(at, "info"))
    balance = at.dataframe[0].value.set_index("split")
    assert balance.loc["all", "images"] == 120 and balance.loc["all", "PNEUMONIA"] == 60
    gallery = [caption for image in at.image for caption in image.captions if "KB" in caption]
    assert len(gallery) == 12 and all("96×96 px" in caption for caption in gallery)
    assert any("All 120 sampled images are 96×96 pixels" in text for text in texts(at, "info"))
    means = [caption for image in at.image for caption in image.captions if caption.startswith("mean")]
    assert means == ["mean NORMAL image (60 images)", "mean PNEUMONIA image (60 images)"]


def test_gallery_filters_and_a_fresh_sample(empty_store, demo_data):
    at = open_app(DATASET)
    widget(at.selectbox, "Class").select("PNEUMONIA")
    widget(at.selectbox, "Infection kind").select("virus")
    at.run()
    assert_clean(at)
    first = [c for image in at.image for c in image.captions if "KB" in c]
    assert first and all("_virus_" in c and "PNEUMONIA" in c for c in first)
    widget(at.selectbox, "Class").select("any")
    widget(at.selectbox, "Infection kind").select("any")
    at.run()
    before = [c for image in at.image for c in image.captions if "KB" in c]
    widget(at.button, "New random sample").click().run()
    after = [c for image in at.image for c in image.captions if "KB" in c]
    assert len(after) == 12 and after != before
    widget(at.selectbox, "Class").select("NORMAL")
    widget(at.selectbox, "Infection kind").select("bacteria")
    at.run()
    assert any("No images match" in text for text in texts(at, "info"))


# ---------------------------------------------------------------- Train


def test_train_page_with_no_runs_explains_and_describes_the_model(empty_store, demo_data):
    at = open_app(TRAIN)
    assert descriptions()["regularized_cnn"] in texts(at, "info")
    assert "No runs yet" in shown(at) and "No model is training right now." in shown(at)
    widget(at.selectbox, "Model").select("densenet121_frozen").run()
    assert_clean(at)
    assert descriptions()["densenet121_frozen"] in texts(at, "info")
    assert widget(at.radio, "Start from").value == "imagenet"
    assert widget(at.number_input, "Epochs").value == default_settings("densenet121_frozen").epochs


def test_launch_queues_a_run_which_can_be_removed_and_deleted(empty_store, demo_data, no_worker):
    at = open_app(TRAIN)
    widget(at.number_input, "Epochs").set_value(3)
    widget(at.select_slider, "Image size (pixels a side)").set_value(64)
    widget(at.button, "Train").click().run()
    assert_clean(at)
    (run,) = empty_store.list()
    assert run.state == "queued" and run.settings["epochs"] == 3 and run.settings["image_size"] == 64
    assert Path(run.settings["data_dir"]) == demo_data.resolve()
    assert any(run.run_id in text for text in texts(at, "success"))
    assert no_worker == [empty_store.root]  # the launch asked for a worker
    table = at.dataframe[0].value
    assert table.loc[0, "state"] == "queued" and table.loc[0, "epochs"] == "0/3"

    widget(at.button, "Remove").click().run()
    assert_clean(at)
    assert empty_store.get(run.run_id).state == "cancelled"
    at.run()
    widget(at.button, "Delete...").click().run()
    assert any(run.run_id in text for text in texts(at, "warning"))
    widget(at.button, "Yes, delete it").click().run()
    assert_clean(at)
    assert empty_store.list() == []
    assert "No runs yet" in shown(at)


def test_the_study_lineup_queues_all_five_models(empty_store, demo_data, no_worker, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "10")  # room for the lineup under both recipes
    at = open_app(TRAIN)
    widget(at.button, "Train the study's lineup").click().run()
    assert_clean(at)
    assert sorted(r.model for r in empty_store.list()) == sorted(STUDY_MODELS)
    assert all(r.state == "queued" for r in empty_store.list())
    assert len(no_worker) == 1  # one worker trains them one after another
    assert sum(text.startswith("Queued:") for text in texts(at, "markdown")) == 5
    assert {r.recipe for r in empty_store.list()} == {"improved"}
    widget(at.button, "Train the study's lineup").click().run()  # the same lineup is not queued twice
    assert len(empty_store.list()) == 5 and any("already waiting" in t for t in texts(at, "success"))
    widget(at.radio, "Recipe").set_value("study").run()
    assert "180x180 input" in shown(at)  # what the study states and what was filled in
    widget(at.button, "Train the study's lineup").click().run()
    study = [r for r in empty_store.list() if r.recipe == "study"]
    assert sorted(r.model for r in study) == sorted(STUDY_MODELS)
    assert {r.settings["image_size"] for r in study} == {180} and {r.settings["threshold_rule"] for r in study} == {"fixed"}


def test_live_progress_of_a_running_job_and_the_stop_button(empty_store, demo_data, no_worker):
    settings = default_settings("regularized_cnn")
    run = empty_store.new_run(settings.to_dict(), str(demo_data), state="running")
    # A stand-in for the training process: set_status records its pid with its start time.
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                           start_new_session=True)
    try:
        empty_store.set_status(run.run_id, pid=job.pid, started=time.time() - 95, epoch=2, batch=3,
                               steps_per_epoch=6)
        history = [{"epoch": e, "seconds": 40.0, "loss": 0.7 / e, "accuracy": 0.6 + e / 20,
                    "val_loss": 0.8 / e, "val_accuracy": 0.55 + e / 20} for e in (1, 2)]
        (run.path / "history.json").write_text(json.dumps(history))
        at = open_app(TRAIN)
        assert texts(at, "subheader") == [f"Training {run_tables.run_label(empty_store.get(run.run_id))}"]
        assert at.get("progress")[0].proto.text == "epoch 2 of 12, batch 3 of 6"
        values = metrics(at)
        assert values["Elapsed"].startswith("1m 3")  # started 95 s ago
        assert values["Estimated remaining"] == "6m 20s"  # (12 - 2.5) epochs x 40 s
        assert len(at.get("plotly_chart")) == 1  # the live loss and accuracy curves
        widget(at.button, "Stop").click().run()
        assert_clean(at)
        assert any("Stopping" in text for text in texts(at, "warning"))
        assert job.wait(timeout=20) == -signal.SIGTERM
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_the_live_curves_are_built_once_per_new_epoch_for_every_session(empty_store, demo_data):
    from ui import runs as ui_runs

    run = empty_store.new_run(default_settings("regularized_cnn").to_dict(), str(demo_data), state="running")
    assert ui_runs.history_chart({"a run": empty_store.get(run.run_id)}) is None  # before the first epoch ends
    history = [{"epoch": e, "loss": 0.7 / e, "val_loss": 0.8 / e, "accuracy": 0.6, "val_accuracy": 0.5} for e in (1, 2)]
    path = run.path / "history.json"
    path.write_text(json.dumps(history))
    first = ui_runs.history_chart({"a run": empty_store.get(run.run_id)})
    assert ui_runs.history_chart({"a run": empty_store.get(run.run_id)}) is first  # another tab, another tick
    history.append({"epoch": 3, "loss": 0.2, "val_loss": 0.3, "accuracy": 0.7, "val_accuracy": 0.6})
    path.write_text(json.dumps(history))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a coarse clock may not tick
    second = ui_runs.history_chart({"a run": empty_store.get(run.run_id)})
    assert max(max(trace.x) for trace in first.data) == 2 and max(max(trace.x) for trace in second.data) == 3


# ---------------------------------------------------------------- Compare


def test_compare_with_no_runs_says_where_to_start(empty_store):
    at = open_app(COMPARE)
    assert any("No finished runs yet" in text for text in texts(at, "info"))
    assert not at.dataframe


def test_compare_shows_the_stored_metrics_and_a_live_threshold(tiny_store):
    store, run_id = tiny_store
    evaluation = store.get(run_id).evaluation("test")
    at = open_app(COMPARE)
    table = at.dataframe[0].value
    low, high = evaluation["ci95"]["accuracy"]
    assert table.loc[0, "accuracy"] == f"{evaluation['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
    assert table.loc[0, "images"] == evaluation["n"]
    published = at.dataframe[1].value.set_index("name")
    assert published.loc["Kermany et al. 2018: Inception-V3 transfer", "sensitivity"] == 0.932
    values = metrics(at)
    assert values["Sensitivity"] == f"{evaluation['sensitivity']:.3f}"
    assert values["Specificity"] == f"{evaluation['specificity']:.3f}"
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert f"{fn} missed pneumonia (FN) and {fp} false alarms (FP) among {evaluation['n']} images." in shown(at)

    at.slider[0].set_value(0.0).run()  # everything is called PNEUMONIA: nothing missed, every healthy child alarmed
    assert_clean(at)
    values = metrics(at)
    assert values["Sensitivity"] == "1.000" and values["Specificity"] == "0.000"
    assert f"0 missed pneumonia (FN) and {tn + fp} false alarms (FP)" in shown(at)
    assert "McNemar" not in shown(at)  # needs two runs

    widget(at.selectbox, "Evaluated on").select_index(1).run()  # the own validation split
    assert_clean(at)
    assert at.dataframe[0].value.loc[0, "images"] == store.get(run_id).evaluation("val")["n"]
    widget(at.selectbox, "Evaluated on").select_index(0).run()
    at.slider[0].set_value(0.0).run()
    widget(at.selectbox, "Cell").select("FP").run()
    assert_clean(at)
    assert f"{tn + fp} images; the most confident calls first." in shown(at)
    assert sum(len(image.captions) for image in at.image) == min(tn + fp, 12)


def test_compare_two_runs_runs_mcnemar_on_the_same_images(two_runs):
    store, run_a, run_b = two_runs
    at = open_app(COMPARE)
    assert len(at.dataframe[0].value) == 2
    labels = {run_id: run_tables.run_label(store.get(run_id)) for run_id in (run_a, run_b)}
    a, b = widget(at.selectbox, "Run A").value, widget(at.selectbox, "Run B").value
    assert {a, b} == set(labels.values())
    by_label = {label: run_id for run_id, label in labels.items()}
    pa, pb = (inference.predictions(by_label[x], "test", store) for x in (a, b))
    ta, tb = (store.get(by_label[x]).evaluation("test")["threshold"] for x in (a, b))
    both = run_tables.align_predictions(pa, pb)
    expected = evaluate.mcnemar_test(both["label"], (both["probability_a"] >= ta).astype(int),
                                     (both["probability_b"] >= tb).astype(int), name_a=a, name_b=b)
    values = metrics(at)
    assert values["Only A right"] == str(expected["a_right_b_wrong"])
    assert values["Only B right"] == str(expected["a_wrong_b_right"])
    assert expected["reading"] in texts(at, "markdown")


# ---------------------------------------------------------------- Predict


def test_predict_with_no_runs_says_where_to_start(empty_store):
    at = open_app(PREDICT)
    assert any("No finished runs yet" in text for text in texts(at, "info"))
    assert not at.file_uploader


def visit_in_a_fresh_interpreter(page: str, then: str) -> None:
    """Open app.py, then `page`, in a new interpreter (a server just started); run `then` there."""
    code = f"""
import gc, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()
at.switch_page({page!r}).run()
assert not at.exception, [e.value for e in at.exception]
{then}
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=APP.parent)
    assert result.returncode == 0, result.stderr[-2000:]


def test_predict_without_runs_does_not_load_tensorflow(empty_store):
    visit_in_a_fresh_interpreter(PREDICT, 'assert "tensorflow" not in sys.modules and "keras" not in sys.modules')


def test_predicting_keeps_tensorflow_out_of_the_server(tiny_store, demo_dir):
    # TensorFlow and the models live in the predictor process: a server that imported them paid
    # seconds on Predict's first visit and held the interpreter lock over every other session.
    name, content = xray_bytes(demo_dir)
    visit_in_a_fresh_interpreter(PREDICT, f"""
at.file_uploader[0].set_value(({name!r}, {content!r}, "image/jpeg")).run()
assert not at.exception, [e.value for e in at.exception]
assert any(c.startswith("Grad-CAM: evidence for") for image in at.image for c in image.captions)
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "the server imported TensorFlow"
""")


def test_predict_an_upload_then_a_corrupt_file(tiny_store, demo_dir):
    store, run_id = tiny_store
    at = open_app(PREDICT)
    uploader = at.file_uploader[0]
    assert {"jpg", "jpeg", "png", "dcm"} <= {t.lstrip(".") for t in uploader.allowed_type}
    name, content = xray_bytes(demo_dir)
    expected = inference.predict_image(inference.load_run(run_id, store), content, name=name)
    assert expected["in_distribution"] is True  # a demo X-ray is like the run's training X-rays

    uploader.set_value((name, content, "image/jpeg"))
    at.run()
    assert_clean(at)
    label = run_tables.run_label(store.get(run_id))
    assert metrics(at)[label] == expected["label"]
    assert any(f"P(pneumonia) **{expected['probability']:.3f}**" in text for text in texts(at, "markdown"))
    captions = [c for image in at.image for c in image.captions]
    assert f"{name} (96×96 px)" in captions and f"Grad-CAM: evidence for {expected['label']}" in captions

    at.slider[0].set_value(0.8).run()  # heat map opacity
    assert_clean(at)
    at.file_uploader[0].set_value(("bad.jpeg", b"this is not an X-ray", "image/jpeg"))
    at.run()
    assert_clean(at)
    errors = [text for text in texts(at, "error") if "bad.jpeg" in text]
    assert errors == ["bad.jpeg: not an image (the bytes are text) - upload a JPEG, PNG or DICOM file"]
    assert not at.metric


def test_predict_a_batch_with_a_dicom_and_a_bad_file(tiny_store, demo_dir):
    store, run_id = tiny_store
    at = open_app(PREDICT)
    name, content = xray_bytes(demo_dir, "NORMAL")
    dicom = dicom_bytes(np.asarray(Image.open(io.BytesIO(content)).convert("L")))
    at.file_uploader[0].set_value([(name, content, "image/jpeg"), ("scan.dcm", dicom, "application/dicom"),
                                   ("empty.png", b"", "image/png")])
    at.run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("file")
    assert list(table.index) == [name, "scan.dcm", "empty.png"]
    assert table.loc[name, "label"] == called(store, run_id, table.loc[name, "probability"])
    assert table.loc[name, "error"] == ""
    # The DICOM holds the same pixels as the JPEG, so the model sees the same image.
    assert table.loc["scan.dcm", "probability"] == pytest.approx(table.loc[name, "probability"], abs=0.02)
    assert "empty.png: the file is empty" in table.loc["empty.png", "error"]
    assert at.get("download_button")
    widget(at.selectbox, "Show details of").select("scan.dcm").run()
    assert_clean(at)
    assert texts(at, "header")[-1] == "scan.dcm"


def test_an_image_unlike_the_training_x_rays_gets_a_warning_and_no_label(tiny_store, demo_dir):
    store, run_id = tiny_store
    at = open_app(PREDICT)
    assert "compared with the run's training X-rays" in shown(at)
    y, x = np.mgrid[0:200, 0:300]
    photo = io.BytesIO()
    Image.fromarray(np.stack([x * 255 // 299, y * 255 // 199, 255 - x * 255 // 299], -1).astype(np.uint8)).save(photo, "PNG")
    name, content = xray_bytes(demo_dir)
    at.file_uploader[0].set_value([("holiday.png", photo.getvalue(), "image/png"), (name, content, "image/jpeg")])
    at.run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("file")
    assert table.loc["holiday.png", "label"] == "withheld" and not table.loc["holiday.png", "in_distribution"]
    assert "colour image" in table.loc["holiday.png", "warning"]
    assert table.loc[name, "label"] == called(store, run_id, table.loc[name, "probability"])
    assert table.loc[name, "in_distribution"]
    label = run_tables.run_label(store.get(run_id))
    assert texts(at, "header")[-1] == "holiday.png"
    assert metrics(at)[label] == "withheld"
    assert any(text.startswith("Not like this run's training X-rays: colour image") for text in texts(at, "error"))


def test_predict_an_image_picked_from_the_data_set(tiny_store, demo_data):
    store, run_id = tiny_store
    at = open_app(PREDICT)
    widget(at.radio, "Image").set_value("data set").run()
    assert_clean(at)
    (picker,) = [box for box in at.selectbox if box.label.startswith("An image of the test/ folder")]
    picked = picker.value
    assert texts(at, "header")[-1] == picked
    (path,) = list(demo_data.rglob(picked))
    expected = inference.predict_image(inference.load_run(run_id, store), path.read_bytes(), name=picked)
    assert list(metrics(at).values())[0] == expected["label"]


def test_a_broken_run_and_a_corrupt_model_leave_the_pages_working(tiny_run, tmp_path, monkeypatch, demo_dir):
    store, run_id = tiny_run
    root = tmp_path / "mixed_runs"
    shutil.copytree(store.root / run_id, root / run_id)
    corrupt = run_id.rsplit("-", 1)[0] + "-dead"
    shutil.copytree(store.root / run_id, root / corrupt)
    (root / corrupt / "model.keras").write_bytes(b"PK\x03\x04 not a keras archive")
    (root / "20260101-000000-junk-0000").mkdir()
    (root / "20260101-000000-junk-0000" / "settings.json").write_text("{not json")
    monkeypatch.setenv("CXR_RUNS_DIR", str(root))

    at = open_app(TRAIN)
    states = at.dataframe[0].value.set_index("run")["state"]
    assert states["20260101-000000-junk-0000"] == "broken" and states[run_id] == "done"

    at = open_app(PREDICT)
    name, content = xray_bytes(demo_dir)
    at.file_uploader[0].set_value([(name, content, "image/jpeg"), (name, content, "image/jpeg")])
    at.run()
    assert_clean(at)
    corrupt_label = run_tables.run_label(RunStore(root).get(corrupt))
    assert any(text.startswith(f"{corrupt_label}: run {corrupt}") for text in texts(at, "error"))
    table = at.dataframe[0].value
    assert list(table["file"]) == [name, f"{name} (2)"]  # same name twice, told apart
    assert set(table["run"]) == {run_tables.run_label(RunStore(root).get(run_id))}


def test_compare_shows_a_runs_evaluation_on_another_folder_and_queues_one(tiny_run, demo_dir, tmp_path, monkeypatch):
    import shutil

    from cxr_core import jobs
    from cxr_core.demo import write_demo_dataset
    from cxr_core.inference import evaluate_run

    source_store, run_id = tiny_run
    store = RunStore(tmp_path / "runs")
    shutil.copytree(source_store.run_path(run_id), store.root / run_id)
    monkeypatch.setenv("CXR_RUNS_DIR", str(store.root))
    other = write_demo_dataset(tmp_path / "hospital_b", n_normal=8, n_pneumonia=9, seed=4, image_size=64)
    scored = evaluate_run(run_id, "test", store, other)
    at = open_app(COMPARE)
    chooser = widget(at.selectbox, "Evaluated on")
    # The demo set keeps its test/ folder: the run's own test split is that folder, not carved from train.
    assert chooser.options == ["test/ folder (the official split)", "own validation split", f"folder {scored['source']}"]
    chooser.select_index(2).run()
    assert_clean(at)
    assert at.dataframe[0].value.loc[0, "images"] == scored["n"]
    assert "flatter every model" not in shown(at)

    # "Score these runs on another labelled folder": one click queues it on the background worker.
    third = write_demo_dataset(tmp_path / "clinic_c", n_normal=6, n_pneumonia=6, seed=5, image_size=64)
    monkeypatch.setenv("CXR_DATA_ROOTS", str(third))
    at = open_app(COMPARE)
    widget(at.selectbox, "Folder").select(next(o for o in widget(at.selectbox, "Folder").options if "clinic_c" in o))
    widget(at.button, "Score").click().run()
    assert_clean(at)
    requests = jobs.evaluation_requests(store)
    assert [r["run"] for r in requests] == [run_id] and requests[0]["data_dir"] == str(third)
    deadline = time.time() + 240
    while jobs.evaluation_requests(store)[0]["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(1)
    assert jobs.evaluation_requests(store)[0]["state"] == "done", jobs.evaluation_requests(store)
    assert "clinic_c" in store.get(run_id).evaluation_sources("test")


# ---------------------------------------------------------------- Lesson


def open_lesson(step: int | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if step is not None:
        at.query_params["step"] = str(step)
    at.switch_page(LESSON).run()
    assert_clean(at)
    return at


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


def test_lesson_steps_move_forwards_and_backwards_and_live_in_the_url(empty_store, demo_data):
    at = open_lesson()
    assert texts(at, "header")[0] == "1. Census: who is in the data set"
    assert at.query_params["step"] == "1"
    assert any("SYNTHETIC" in text for text in texts(at, "warning"))
    balance = explore.class_balance(data.assign_splits(data.scan_folder(demo_data).manifest))
    share = balance.loc[balance["split"] == "all", "always_pneumonia_accuracy"].iloc[0]
    assert metrics(at)["Accuracy of always answering PNEUMONIA"] == f"{share:.1%}"
    button(at, "Next").click().run()
    assert_clean(at)
    assert at.query_params["step"] == "2" and texts(at, "header")[0].startswith("2. The validation trap")
    values = metrics(at)
    assert values["Images in the official val folder"] == "0"  # the demo set has no val/ folder
    measured = lesson.leakage_experiment(data.scan_folder(demo_data).manifest)
    assert values["Image-level split: accuracy"] == f"{measured['image_level_accuracy']:.3f}"
    assert values["Patient-level split: accuracy"] == f"{measured['patient_level_accuracy']:.3f}"
    assert any(text.startswith("**Discuss.**") for text in texts(at, "info"))
    button(at, "Previous").click().run()
    assert at.query_params["step"] == "1"
    widget(at.selectbox, "Go to step").select(9).run()
    assert_clean(at)
    assert at.query_params["step"] == "9" and button(at, "Next").disabled  # the last step


def test_a_lesson_link_to_a_step_opens_that_step(empty_store, demo_data):
    at = open_lesson(4)
    assert texts(at, "header")[0] == "4. Sensitivity against specificity"
    assert any("needs a trained model" in text for text in texts(at, "info"))
    at = open_lesson(99)  # out of range: the last step, and the URL says so
    assert texts(at, "header")[0].startswith("9.") and at.query_params["step"] == "9"


def test_lesson_steps_queue_what_is_missing(empty_store, demo_data, no_worker):
    at = open_lesson(3)
    button(at, "Train baseline_cnn and regularized_cnn (the study's recipe)").click().run()
    assert_clean(at)
    queued = {(run.model, run.recipe) for run in jobs.queued(empty_store)}
    assert queued == {("baseline_cnn", "study"), ("regularized_cnn", "study")} and no_worker
    assert {run.settings["image_size"] for run in jobs.queued(empty_store)} == {180}
    assert any(p.proto.text.startswith("Training baseline_cnn (queued)") for p in at.get("progress"))
    at = open_lesson(9)
    widget(at.radio, "Start from").set_value("none").run()
    button(at, "Train mobilenetv2_frozen, mobilenetv2_finetune, densenet121_frozen").click().run()
    assert_clean(at)
    transfer = [r for r in jobs.queued(empty_store) if r.model in registry.pretrained()]
    assert len(transfer) == 3 and {r.settings["weights"] for r in transfer} == {"none"}


@pytest.fixture
def lesson_store(tiny_run, tmp_path, monkeypatch, demo_dir):
    """A private copy of the tiny run (on the demo set the lesson shows), so queued evaluations stay here."""
    store, run_id = tiny_run
    root = tmp_path / "lesson_runs"
    shutil.copytree(store.root / run_id, root / run_id)
    monkeypatch.setenv("CXR_RUNS_DIR", str(root))
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    return RunStore(root), run_id


def test_every_lesson_step_with_a_trained_run(lesson_store, no_worker):
    store, run_id = lesson_store
    evaluation = store.get(run_id).evaluation("test")

    at = open_lesson(3)
    assert any("Not trained with the study's recipe on this data set yet: baseline_cnn, regularized_cnn" in t
               for t in texts(at, "info"))
    assert len(at.get("plotly_chart")) == 1  # ours: the regularized CNN's confusion matrix

    at = open_lesson(4)
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    assert metrics(at)["Missed pneumonia (FN)"] == str(fn) and metrics(at)["False alarms (FP)"] == str(fp)
    widget(at.slider, "Threshold").set_value(0.0).run()
    assert metrics(at)["Missed pneumonia (FN)"] == "0" and metrics(at)["False alarms (FP)"] == str(tn + fp)

    at = open_lesson(5)
    # The demo set is laid out like the Kaggle download: its own test/ against the validation split.
    assert at.dataframe[0].value["scored on"].tolist() == ["test/ folder (the official split)", lesson.VALIDATION_ROW]
    assert at.get("expander")  # score on a configured folder

    at = open_lesson(6)
    report = calibration.for_run(run_id, store)
    assert metrics(at)["Expected calibration error"] == f"{report['ece']:.3f}"

    def bayes(prevalence: float) -> dict:
        """What the step shows at `prevalence`: Bayes' rule on this run's own sensitivity and specificity.
        (A run with specificity 1.0 has PPV 100% at every prevalence: compare values, not changes.)"""
        at = calibration.predictive_values(evaluation["sensitivity"], evaluation["specificity"], prevalence)
        rate = lambda value: "n/a" if value is None else f"{value:.1%}"  # noqa: E731
        return {"PPV: a PNEUMONIA call is right": rate(at["ppv"]), "NPV: a NORMAL call is right": rate(at["npv"]),
                "False alarms per 1000 children": f"{at['per_1000']['false_alarms']:.0f}",
                "Missed per 1000 children": f"{at['per_1000']['missed']:.0f}"}

    for prevalence in (0.05, 0.5):  # the slider's default, then a prevalence moved to
        widget(at.slider, "Prevalence of pneumonia where the model is used").set_value(prevalence).run()
        assert {k: metrics(at)[k] for k in bayes(prevalence)} == bayes(prevalence)

    at = open_lesson(7)
    assert len(at.dataframe[0].value) == 1 and len(at.image) == 3
    button(at, "Score this run with the lung fields occluded, and with only them").click().run()
    assert_clean(at)
    requests = jobs.evaluation_requests(store)
    assert sorted(r["occlusion"] for r in requests) == ["lungs", "outside"] and no_worker
    assert all(r["run"] == run_id and r["state"] == "queued" for r in requests)
    for request in requests:  # what the worker would do
        jobs.run_evaluation(request, store, echo=lambda line: None)
    at = open_lesson(7)
    assert at.dataframe[0].value["scored on"].tolist()[1:] == ["test/ folder (the official split), lung fields blacked out",
                                                                 "test/ folder (the official split), only the lung fields kept"]

    at = open_lesson(8)
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("trained model: evidence for") for c in captions)
    assert "the same network, random weights" in captions
    assert "Rank correlation of the two maps (Spearman)" in metrics(at)

    at = open_lesson(9)
    table = at.dataframe[0].value
    assert table["model"].tolist() == ["regularized_cnn"] and table.loc[0, "weights"].startswith("random")
    assert at.get("download_button")


def test_compare_offers_the_report_and_predict_labels_a_synthetic_run(tiny_store, demo_dir):
    at = open_app(COMPARE)
    assert len(at.get("download_button")) == 1
    at = open_app(PREDICT)
    assert any("SYNTHETIC" in text for text in texts(at, "warning"))


def all_text(at: AppTest) -> str:
    """Every element's content on the page, sidebar and tooltips included (their protobufs as text)."""
    found, nodes = [], [at._tree]
    while nodes:
        node = nodes.pop()
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        nodes.extend(getattr(node, "children", {}).values())
    return "\n".join(found)


def test_no_page_shows_the_servers_own_folders(tiny_store, demo_data, private_dirs):
    store, _ = tiny_store
    secret = {str(store.root), str(private_dirs["cache"]), str(demo_data), str(PROJECT_ROOT)}
    for page in (None, DATASET, TRAIN, COMPARE, PREDICT, LESSON):
        text = all_text(open_app(page))
        if page is None:  # the walk reaches the sidebar, whose folder label once showed the full path
            assert f"{demo_data.name} ({demo_data.name})" in text
        assert not [path for path in secret if path in text], page
