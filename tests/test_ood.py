"""The out-of-distribution check (cxr_core.ood): its statistics on made-up data, and its contract
on the tiny run: fitted with the run, passes validation by construction, refuses what is not a
chest X-ray (colour, blank, text, checkerboard, noise, gradient, rotated and inverted films),
lets the demo X-rays through, and leaves runs trained before it working.

The tiny run trains 2 epochs on synthetic images, so its features alone are weak; the
made-up images are refused by the model-independent checks too, and the tests only ask
for refusal, not for which check refused, except where one check is the only one that can see it.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cxr_core import images, inference, ood
from cxr_core.config import UserError
from cxr_core.store import RunStore


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "PNG")
    return buffer.getvalue()


def colour_photo() -> bytes:
    y, x = np.mgrid[0:300, 0:400]
    return png(np.stack([x * 255 // 399, y * 255 // 299, 255 - x * 255 // 399], axis=-1).astype(np.uint8))


def text_page() -> bytes:
    page = Image.new("L", (420, 560), 255)
    draw = ImageDraw.Draw(page)
    for line in range(28):
        draw.text((20, 12 + line * 19), f"Discharge summary, line {line}: no acute findings, review in a week.", fill=0)
    buffer = io.BytesIO()
    page.save(buffer, "PNG")
    return buffer.getvalue()


def not_xrays() -> dict[str, bytes]:
    y, x = np.mgrid[0:300, 0:300]
    return {
        "colour.png": colour_photo(),
        "text.png": text_page(),
        "checkerboard.png": png(((x // 25 + y // 25) % 2 * 255).astype(np.uint8)),
        "blank.png": png(np.full((300, 300), 200, np.uint8)),
        "noise.png": png(np.random.default_rng(0).integers(0, 256, (300, 300)).astype(np.uint8)),
        "gradient.png": png((x * 255 // 299).astype(np.uint8)),
    }


def file_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


# ---------------------------------------------------------------- statistics, no model


def test_distance_is_ledoit_wolf_mahalanobis():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(1)
    train, new = rng.normal(size=(40, 12)) * np.arange(1, 13), rng.normal(size=(5, 12))
    expected = np.sqrt(LedoitWolf().fit(train).mahalanobis(new))
    assert np.allclose(ood.Gaussian.fit(train).distance(new), expected)


@pytest.mark.parametrize("n", [3, 14, 800])
def test_the_threshold_passes_the_validation_distances_by_construction(n):
    rng = np.random.default_rng(n)
    validation, held_out = rng.lognormal(2.5, 0.3, n), rng.lognormal(2.5, 0.3, 80)
    limit = ood.threshold(validation, held_out)
    assert np.mean(validation <= limit) >= ood.PASS_QUANTILE
    assert limit >= np.quantile(validation, ood.PASS_QUANTILE)


def test_appearance_tells_gray_films_from_colour_blank_and_black_and_white_files(demo_dir):
    xray = next((demo_dir / "test" / "NORMAL").glob("*.jpeg"))
    as_rgb = io.BytesIO()
    Image.open(xray).convert("RGB").save(as_rgb, "JPEG", quality=90)  # gray film in an RGB JPEG, like Kaggle's
    for data in (xray.read_bytes(), as_rgb.getvalue()):
        _, looks = images.load_with_appearance(data, 64)
        assert ood.appearance_problems(looks) == [], looks
    made_up = not_xrays()
    expected = {"colour.png": "colour image", "blank.png": "nearly blank", "text.png": "pure black and white",
                "checkerboard.png": "pure black and white"}
    for name, phrase in expected.items():
        _, looks = images.load_with_appearance(made_up[name], 64, name=name)
        assert any(phrase in problem for problem in ood.appearance_problems(looks)), (name, looks)


def test_load_with_appearance_gives_the_pixels_load_for_model_gives(demo_dir):
    path = next((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))
    pixels, _ = images.load_with_appearance(path, 64)
    assert np.array_equal(pixels, images.load_for_model(path, 64))


# ---------------------------------------------------------------- the tiny run


@pytest.fixture(scope="module")
def loaded(tiny_run):
    store, run_id = tiny_run
    return inference.load_run(run_id, store)


def test_the_check_is_stored_with_the_run_before_its_model(tiny_run, loaded):
    store, run_id = tiny_run
    path = store.run_path(run_id)
    assert loaded.ood is not None
    info = loaded.ood.info
    assert info["feature_layer"] == "gap"  # regularized_cnn: the pooled features before dropout
    assert set(info["thresholds"]) == {"features", "layout"}
    assert info["validation_pass"]["all"] >= 1 - 2 * (1 - ood.PASS_QUANTILE)
    for name in ("ood.npz", "ood.json"):
        assert (path / name).stat().st_mtime_ns <= (path / "model.keras").stat().st_mtime_ns


def test_features_are_the_penultimate_layer_from_the_same_pass_as_the_probability(tiny_run, loaded):
    import keras

    store, run_id = tiny_run
    split = store.split(run_id)
    root = store.get(run_id).settings["data_dir"]
    batch = np.stack([images.load_for_model(f"{root}/{p}", loaded.image_size) for p in split.path[:4]])
    prob, features = inference.outputs(loaded, batch)
    gap = keras.Model(loaded.model.inputs, loaded.model.get_layer("gap").output)
    assert np.allclose(features, np.asarray(gap(batch.astype("float32"), training=False)), atol=1e-5)
    assert np.allclose(prob, np.asarray(loaded.model(batch.astype("float32"), training=False)).reshape(-1), atol=1e-6)
    assert np.array_equal(inference.probabilities(loaded, batch), prob)


def test_the_stored_thresholds_pass_the_validation_x_rays(tiny_run, loaded):
    store, run_id = tiny_run
    split = store.split(run_id)
    root = store.get(run_id).settings["data_dir"]
    val = split[split.split == "val"]
    batch = np.stack([images.load_for_model(f"{root}/{p}", loaded.image_size) for p in val.path])
    _, features = inference.outputs(loaded, batch)
    detector = loaded.ood
    slack = 1 + 1e-4  # a single-image pass may differ from training's batched one in the last bits
    for name, distances in (("features", detector.features.distance(features)),
                            ("layout", detector.layout.distance(ood.layout_vectors(batch)))):
        assert np.mean(distances <= detector.thresholds[name] * slack) >= ood.PASS_QUANTILE, name
        assert detector.info["validation_pass"][name] >= ood.PASS_QUANTILE


def test_demo_x_rays_the_run_never_saw_pass(tiny_run, loaded):
    store, run_id = tiny_run
    split = store.split(run_id)
    root = store.get(run_id).settings["data_dir"]
    results = [inference.predict_image(loaded, f"{root}/{p}") for p in split.path[split.split == "test"]]
    passed = [r["in_distribution"] for r in results]
    assert all(isinstance(p, bool) for p in passed)
    # About 99.5% each by design; the run's 2 epochs and ~20 test images leave room for one miss.
    assert sum(passed) >= len(passed) - 1, [r.get("warning") for r in results if not r["in_distribution"]]


@pytest.mark.parametrize("name", list(not_xrays()))
def test_what_is_not_a_chest_x_ray_is_refused_with_a_reason(loaded, name):
    result = inference.predict_image(loaded, not_xrays()[name], name=name)
    assert result["in_distribution"] is False
    assert result["warning"]
    assert result["label"] in ("NORMAL", "PNEUMONIA")  # still computed: the CLI's contract keeps it
    if name == "colour.png":
        assert "colour image: chest X-rays are grayscale" in result["warning"]
    if name == "blank.png":
        assert "nearly blank" in result["warning"]


@pytest.mark.parametrize("turn, hint", [(lambda g: np.rot90(g, 1), "rotate it upright"),
                                        (lambda g: np.rot90(g, -1), "rotate it upright"),
                                        (lambda g: 255 - g, "invert it")])
def test_rotated_and_inverted_x_rays_are_refused_and_told_how_to_fix(tiny_run, loaded, turn, hint):
    # Validation films: turned back they are images the thresholds pass, so the hint must be found.
    store, run_id = tiny_run
    split = store.split(run_id)
    root = store.get(run_id).settings["data_dir"]
    for path in split.path[split.split == "val"]:
        result = inference.predict_image(loaded, png(turn(file_gray(f"{root}/{path}"))), name=path)
        assert result["in_distribution"] is False, path
        assert hint in result["warning"], result["warning"]


def test_a_run_trained_before_the_check_still_predicts(tiny_run, tmp_path, demo_dir):
    store, run_id = tiny_run
    shutil.copytree(store.run_path(run_id), tmp_path / run_id)
    for name in ("ood.npz", "ood.json"):
        (tmp_path / run_id / name).unlink()
    old = inference.load_run(run_id, RunStore(tmp_path))
    assert old.ood is None
    xray = next((demo_dir / "test" / "NORMAL").glob("*.jpeg"))
    for source in (xray, colour_photo()):
        result = inference.predict_image(old, source, name="x")
        assert result["in_distribution"] is None and "warning" not in result
        assert result["label"] in ("NORMAL", "PNEUMONIA")


def test_an_unreadable_check_says_what_to_do(tiny_run, tmp_path):
    store, run_id = tiny_run
    shutil.copytree(store.run_path(run_id), tmp_path / run_id)
    (tmp_path / run_id / "ood.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match="delete both files to predict without"):
        inference.load_run(run_id, RunStore(tmp_path))
