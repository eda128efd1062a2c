"""import-model: outside Keras models stored as runs, scored by the project's one preprocessing path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from cxr_core import explain, images  # noqa: E402
from cxr_core.config import UserError  # noqa: E402
from cxr_core.imported import InputHandling, import_model  # noqa: E402
from cxr_core.inference import evaluate_run, load_run, predict_image  # noqa: E402
from cxr_core.store import RunStore  # noqa: E402

SIZE = 32


def outside_model(channels: int, output: str, seed: int = 0):
    """A small CNN as a Keras tutorial builds it: Rescaling inside, so it takes 0..255."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((SIZE, SIZE, channels))
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    head = {"sigmoid": keras.layers.Dense(1, activation="sigmoid"), "logits2": keras.layers.Dense(2),
            "probs2": keras.layers.Dense(2, activation="softmax")}[output]
    return keras.Model(image, head(x))


def expected_probability(model, pixels: np.ndarray, channels: int, output: str, scale: str = "0-255") -> np.ndarray:
    """model.predict on the project's preprocessed pixels (n, S, S, 1), read as P(pneumonia) by hand."""
    x = np.repeat(pixels.astype(np.float32), channels, axis=-1)
    x = x / 255.0 if scale == "0-1" else x
    out = model.predict(x, verbose=0)
    if output == "sigmoid":
        return out[:, 0]
    if output == "logits2":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True))[:, 1]
    return out[:, 1]


def save(model, fmt: str, folder):
    path = folder / {"keras": "model.keras", "h5": "model.h5", "savedmodel": "saved"}[fmt]
    if fmt == "savedmodel":
        model.export(str(path), verbose=False)
    else:
        model.save(path)
    return path


def some_images(demo_dir) -> list[str]:
    files = sorted((demo_dir / "test" / "NORMAL").glob("*"))[:3] + sorted((demo_dir / "test" / "PNEUMONIA").glob("*"))[:3]
    return [str(f) for f in files]


@pytest.mark.parametrize("fmt,channels,output", [
    ("keras", 3, "logits2"), ("keras", 1, "sigmoid"), ("h5", 3, "sigmoid"), ("h5", 1, "logits2"),
    ("keras", 3, "probs2"), ("savedmodel", 3, "logits2"), ("savedmodel", 1, "sigmoid"),
])
def test_stored_predictions_equal_model_predict_on_the_same_preprocessed_images(fmt, channels, output, demo_dir,
                                                                               tmp_path):
    model = outside_model(channels, output)
    store = RunStore(tmp_path / "runs")
    run_id = import_model(save(model, fmt, tmp_path), "outside", store, InputHandling(output=output))
    run = store.get(run_id)
    assert run.state == "done" and run.recipe == "imported" and run.settings["format"] == fmt
    assert run.settings["image_size"] == SIZE and run.settings["channels"] == channels
    assert len(run.settings["source_sha256"]) == 64
    evaluation = evaluate_run(run_id, "test", store, demo_dir)
    stored = pd.read_csv(run.path / f"predictions_test@{evaluation['source']}.csv")
    pixels = np.stack([images.load_for_model(demo_dir / p, SIZE) for p in stored["path"]])
    np.testing.assert_allclose(stored["probability"], expected_probability(model, pixels, channels, output),
                               rtol=1e-4, atol=1e-5)
    assert evaluation["threshold"] == 0.5 and evaluation["threshold_source"] == "fixed"


def test_a_model_that_expects_0_to_1_gets_its_range_and_reversed_classes_are_read(demo_dir, tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    store = RunStore(tmp_path / "runs")
    run_id = import_model(save(model, "keras", tmp_path), "ranged", store,
                          InputHandling(scale="0-1", output="logits2", classes=("PNEUMONIA", "NORMAL")))
    loaded = load_run(run_id, store)
    file = some_images(demo_dir)[0]
    pixels = images.load_for_model(file, SIZE)[None]
    p_normal_second = expected_probability(model, pixels, 3, "logits2", scale="0-1")[0]
    assert predict_image(loaded, file)["probability"] == pytest.approx(1 - p_normal_second, abs=1e-5)


def test_grad_cam_looks_inside_an_imported_model_and_a_savedmodel_says_why_not(demo_dir, tmp_path):
    store = RunStore(tmp_path / "runs")
    model = outside_model(3, "logits2")
    file = some_images(demo_dir)[-1]
    pixels = images.load_for_model(file, SIZE)
    inside = load_run(import_model(save(model, "keras", tmp_path), "cam", store, InputHandling(output="logits2")), store)
    heat = explain.gradcam(inside.model, pixels)
    assert heat.shape == (SIZE, SIZE) and heat.max() > 0
    assert explain.last_conv_layer_name(inside.model) == model.layers[4].name  # the model's own last conv, flat
    callable_only = load_run(import_model(save(model, "savedmodel", tmp_path), "sm", store,
                                          InputHandling(output="logits2")), store)
    with pytest.raises(ValueError, match="can only call"):
        explain.gradcam(callable_only.model, pixels)


def test_threshold_on_a_labelled_folder_uses_the_site_rule(demo_dir, tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = import_model(save(outside_model(1, "sigmoid"), "keras", tmp_path), "site", store, InputHandling(),
                          threshold_on=demo_dir)
    choice = store.run_path(run_id) / "threshold.json"
    import json

    data = json.loads(choice.read_text())
    assert data["rule_name"] == "site" and "labelled folder" in data["rule"] and data["n"] > 0


def lambda_model_file(folder):
    image = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = folder / "lambda.keras"
    keras.Model(image, keras.layers.Dense(1, activation="sigmoid")(x)).save(path)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda_model_file, "Lambda layer"),
    (lambda folder: (folder / "notes.keras").write_text("not a model") and folder / "notes.keras", "not a Keras model"),
    (lambda folder: _truncated(folder), "damaged or truncated"),
    (lambda folder: _wrong_shape(folder), "takes input of shape"),
])
def test_bad_files_are_refused_in_one_line_and_nothing_is_stored(make, message, tmp_path):
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as caught:
        import_model(path, "bad", store, InputHandling())
    assert "\n" not in str(caught.value)
    assert list(store.root.iterdir()) == []  # not even a hidden temp folder


def _truncated(folder):
    path = save(outside_model(1, "sigmoid"), "keras", folder)
    path.write_bytes(path.read_bytes()[:300])
    return path


def _wrong_shape(folder):
    image = keras.Input((SIZE * SIZE,))
    path = folder / "flat.keras"
    keras.Model(image, keras.layers.Dense(1, activation="sigmoid")(image)).save(path)
    return path


def test_a_declared_size_that_contradicts_the_model_is_refused(tmp_path):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(UserError, match="pass --image-size 32"):
        import_model(save(outside_model(1, "sigmoid"), "keras", tmp_path), "x", store, InputHandling(image_size=64))
    with pytest.raises(UserError, match="--output sigmoid"):
        import_model(save(outside_model(1, "logits2"), "keras", tmp_path), "x", store, InputHandling())


# ---------------------------------------------------------------- the pages take it


def test_the_train_page_imports_a_model_file_and_refuses_a_lambda_one(demo_dir, tmp_path, monkeypatch, app_page):
    monkeypatch.setenv("CXR_DATA_DIR", str(demo_dir))
    good = save(outside_model(3, "logits2"), "keras", tmp_path).read_bytes()
    bad = lambda_model_file(tmp_path).read_bytes()
    store = RunStore(tmp_path / "runs")
    at = app_page("pages/2_train.py", store.root)
    uploader = [u for u in at.file_uploader if u.label == "Model file"][0]
    uploader.set_value(("lambda.keras", bad, "application/octet-stream"))
    at.run()
    [s for s in at.selectbox if s.label == "Output"][0].set_value("logits2")
    [b for b in at.button if b.label == "Import"][0].click().run()
    assert any("Lambda layer" in e.value for e in at.error) and store.list() == []
    [u for u in at.file_uploader if u.label == "Model file"][0].set_value(("colab.keras", good, "application/octet-stream"))
    at.run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    (run,) = store.list()
    assert run.recipe == "imported" and run.settings["output"] == "logits2" and run.settings["source_name"] == "colab.keras"
    assert any(run.run_id in s.value for s in at.success)


def test_the_predict_page_says_why_a_savedmodel_has_no_heat_map(demo_dir, tmp_path, monkeypatch, app_page):
    store = RunStore(tmp_path / "runs")
    run_id = import_model(save(outside_model(1, "sigmoid"), "savedmodel", tmp_path), "sm", store, InputHandling())
    at = app_page("pages/4_predict.py", store.root)
    image = sorted((demo_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    at.file_uploader[0].set_value((image.name, image.read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(run_id.rsplit("-", 1)[-1] in m.label for m in at.metric)
    assert any("can only call" in c.value for c in at.caption)


def test_an_imported_model_is_compared_and_reported_beside_a_trained_run(tiny_run, demo_dir, tmp_path, capsys):
    import json
    import shutil

    from cxr_core.cli import main

    trained_store, trained_id = tiny_run
    store = RunStore(tmp_path / "runs")
    shutil.copytree(trained_store.run_path(trained_id), store.root / trained_id)
    site = tmp_path / "site"
    shutil.copytree(demo_dir / "test", site / "test")
    imported = import_model(save(outside_model(3, "logits2"), "keras", tmp_path), "colab", store,
                            InputHandling(output="logits2"))
    runs = ["--runs", str(store.root)]
    with pytest.raises(UserError, match="pass --data"):
        evaluate_run(imported, "test", store)  # no split of its own
    for run_id in (imported, trained_id):
        assert main(["evaluate", run_id, "--data", str(site), "--json", *runs]) == 0
    source = json.loads(capsys.readouterr().out.splitlines()[-1])["source"]
    assert main(["compare", imported, trained_id, "--on", source, "--json", *runs]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {row["run"] for row in report["metrics"]} == {imported, trained_id} and "mcnemar" in report
    assert main(["report", imported, trained_id, "--on", source, "--out", str(tmp_path / "r.html"), *runs]) == 0
    image = sorted((site / "test" / "NORMAL").glob("*"))[0]
    assert main(["predict", imported, str(image), "--heatmap", str(tmp_path / "cam.png"), *runs]) == 0
    assert (tmp_path / "cam.png").stat().st_size > 0


def test_predict_heatmap_of_a_savedmodel_says_why_in_one_line(demo_dir, tmp_path, capsys):
    from cxr_core.cli import main

    store = RunStore(tmp_path / "runs")
    run_id = import_model(save(outside_model(1, "sigmoid"), "savedmodel", tmp_path), "sm", store, InputHandling())
    image = sorted((demo_dir / "test" / "NORMAL").glob("*"))[0]
    assert main(["predict", run_id, str(image), "--heatmap", str(tmp_path / "x.png"), "--runs", str(store.root)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: no heat map:") and "can only call" in error and "\n" not in error
