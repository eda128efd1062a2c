"""Contracts of cxr_core.models: the five study models build from real layers, flat, with
weights from nowhere, a local file, or ImageNet (offline: a clear error; a placed file: used),
fine-tuning keeps BatchNorm frozen, and saved models reload in safe mode unchanged."""

from __future__ import annotations

import urllib.request
from dataclasses import replace

import keras
import keras.src.backend.config as keras_config
import numpy as np
import pytest

from cxr_core import registry
from cxr_core.config import UserError
from cxr_core.models import _download_failed, build_model, unfreeze_top, weight_file_name
from cxr_core.registry import STUDY_MODELS, default_settings

FINETUNE_FROM = registry.get("mobilenetv2_finetune").finetune_from

SIZE = 64  # transfer bases need at least 32 px


def settings_for(name: str, **changes):
    settings = default_settings(name)
    settings.image_size, settings.weights = SIZE, "none"
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


def batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 1)).astype("float32")


def all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def same_weights(reference: keras.Model, model: keras.Model) -> bool:
    """Every weighted layer of `reference` has a namesake in `model` holding equal arrays."""
    compared = 0
    for layer in reference.layers:
        if not layer.weights:
            continue
        for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True):
            if not np.array_equal(a, b):
                return False
            compared += 1
    return compared > 0


@pytest.fixture(scope="module")
def built():
    return {name: build_model(settings_for(name)) for name in STUDY_MODELS}


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_each_model_builds_and_outputs_a_probability(built, name):
    model = built[name]
    assert model.name == name
    assert model.input_shape == (None, SIZE, SIZE, 1)
    out = np.asarray(model(batch(), training=False))
    assert out.shape == (3, 1)
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.isfinite(out))


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_models_are_flat_and_have_no_lambda(built, name):
    model = built[name]
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in all_layers(model))
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # no nested base model
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs, "Grad-CAM needs a convolution it can reach in model.layers"


def test_transfer_models_expose_their_base_layers(built):
    names = {layer.name for layer in built["mobilenetv2_frozen"].layers}
    assert {"Conv1", FINETUNE_FROM, "out_relu"} <= names
    assert "conv5_block16_2_conv" in {layer.name for layer in built["densenet121_frozen"].layers}


def test_transfer_base_is_frozen_and_the_head_trains(built):
    model = built["mobilenetv2_frozen"]
    assert not model.get_layer("Conv1").trainable and not model.get_layer("block_16_project").trainable
    assert model.get_layer("pneumonia").trainable
    trainable = {v.path.split("/")[0] for v in model.trainable_weights}
    assert trainable == {"pneumonia"}


def test_unfreeze_top_trains_the_top_but_keeps_batchnorm_frozen():
    model = build_model(settings_for("mobilenetv2_finetune"))
    frozen_before = len(model.trainable_weights)
    count = unfreeze_top(model, FINETUNE_FROM)
    names = [layer.name for layer in model.layers]
    start = names.index(FINETUNE_FROM)
    top, bottom = model.layers[start:], model.layers[:start]
    assert count == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top) > 0
    for layer in top:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        else:
            assert layer.trainable, layer.name
    early = ("Conv1", "block_", "expanded")
    assert not any(layer.trainable for layer in bottom if layer.weights and layer.name.startswith(early))
    assert model.get_layer("block_16_project").trainable and not model.get_layer("block_16_project_BN").trainable
    assert len(model.trainable_weights) > frozen_before
    with pytest.raises(ValueError):
        unfreeze_top(build_model(settings_for("baseline_cnn")), FINETUNE_FROM)


def test_weights_from_a_local_file(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    keras.utils.set_random_seed(123)  # other random values than build_model's own seed would give
    for layer in reference.layers:
        layer.set_weights([np.random.normal(size=w.shape).astype(w.dtype) for w in layer.get_weights()])
    path = tmp_path / "mobilenet.weights.h5"
    reference.save_weights(path)
    model = build_model(settings_for("mobilenetv2_frozen", weights=str(path)))  # augmentation on, as by default
    assert same_weights(reference, model)
    assert not same_weights(reference, build_model(settings_for("mobilenetv2_frozen")))


def test_weights_file_missing_or_bad(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_model(settings_for("mobilenetv2_frozen", weights=str(tmp_path / "nope.h5")))
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="cannot load weights"):
        build_model(settings_for("mobilenetv2_frozen", weights=str(garbage)))


@pytest.fixture
def offline_keras_home(tmp_path, monkeypatch):
    """No network (every proxy refuses) and an empty Keras home: deterministic on any machine."""
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))  # read once at import: patch it too
    # urlopen keeps the first opener it builds, with the proxies of that moment: the refusing one Keras
    # builds here must not outlive the test (a later loopback request in this process would be refused).
    monkeypatch.setattr(urllib.request, "_opener", None)
    return home


@pytest.mark.parametrize("name", ["mobilenetv2_frozen", "densenet121_frozen"])
def test_imagenet_offline_is_a_clear_error(offline_keras_home, name):
    with pytest.raises(UserError) as error:
        build_model(settings_for(name, weights="imagenet"))
    message = str(error.value)
    assert "~/.keras/models" in message and "--weights" in message
    family = "densenet121" if name.startswith("densenet") else "mobilenetv2"
    assert weight_file_name(family, settings_for(name).image_size) in message
    assert list((offline_keras_home / "models").iterdir()) == []  # no partial download left behind


def test_imagenet_weights_placed_by_hand_are_used_offline(offline_keras_home):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    keras.utils.set_random_seed(7)
    for layer in reference.layers:
        layer.set_weights([np.random.normal(size=w.shape).astype(w.dtype) for w in layer.get_weights()])
    target = offline_keras_home / "models" / weight_file_name("mobilenetv2", 224)
    target.parent.mkdir()
    try:  # the format of Keras' own ImageNet files: legacy weights-only HDF5
        import h5py
        from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

        with h5py.File(target, "w") as handle:
            save_weights_to_hdf5_group(handle, reference)
    except ImportError:
        reference.save(target)  # a legacy full-model .h5 loads the same way
    model = build_model(settings_for("mobilenetv2_frozen", weights="imagenet"))
    assert same_weights(reference, model)


@pytest.mark.parametrize("name", STUDY_MODELS)
def test_saved_model_reloads_in_safe_mode_with_the_same_outputs(built, name, tmp_path):
    model = built[name]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = batch(2, seed=1)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_batchnorm_statistics_settle_within_one_epoch_on_small_data():
    # The demo set has ~6 steps an epoch: with momentum 0.9 the moving statistics lag for
    # epochs and every validation image got the same answer. Real data (~116 steps) keeps 0.9.
    small = build_model(settings_for("regularized_cnn"), steps_per_epoch=6)
    momenta = {layer.momentum for layer in small.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert len(momenta) == 1 and momenta.pop() ** 6 <= 0.05
    large = build_model(settings_for("regularized_cnn"), steps_per_epoch=116)
    assert {layer.momentum for layer in large.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    assert all(layer.momentum >= 0.5 for layer in build_model(settings_for("regularized_cnn"), steps_per_epoch=1).layers
               if isinstance(layer, keras.layers.BatchNormalization))


def conv_widths(model: keras.Model) -> list[int]:
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_the_study_recipe_builds_the_keras_tutorials_cnns():
    study = lambda name: replace(default_settings(name, "study"), image_size=SIZE)  # noqa: E731
    baseline, regularized = build_model(study("baseline_cnn")), build_model(study("regularized_cnn"))
    for model in (baseline, regularized):
        assert conv_widths(model) == [16, 32, 64]
        assert model.get_layer("dense").units == 128 and model.get_layer("flatten") is not None
        assert model.output_shape == (None, 1)
    kinds = lambda model: {type(layer).__name__ for layer in model.layers}  # noqa: E731
    assert not kinds(baseline) & {"BatchNormalization", "Dropout", "RandomFlip"}
    assert {"BatchNormalization", "RandomFlip", "RandomRotation", "RandomZoom"} <= kinds(regularized)
    assert regularized.get_layer("dropout").rate == 0.5
    assert regularized.get_layer("aug_rotate").factor == (-0.1, 0.1)
    # Ours keeps its own shape: five blocks and global average pooling, no flips.
    ours = build_model(settings_for("regularized_cnn"))
    assert conv_widths(ours) == [16, 32, 64, 128, 256] and "RandomFlip" not in kinds(ours)


@pytest.mark.parametrize("name", ["baseline_cnn", "regularized_cnn"])
def test_the_study_cnns_take_rgb_and_train_two_logits_with_sparse_categorical_cross_entropy(name):
    model = build_model(replace(default_settings(name, "study"), image_size=SIZE))
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.kernel.shape[2] == 3  # three-channel kernels, as on the loader's RGB
    logit_layers = [model.get_layer(f"logit_{name}") for name in ("normal", "pneumonia")]
    assert [layer.units for layer in logit_layers] == [1, 1]  # a Dense 2, column by column
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 1)).astype("float32")
    logits = keras.ops.concatenate([keras.Model(model.inputs, layer.output)(images, training=False)
                                    for layer in logit_layers], axis=-1)
    prob = np.asarray(model(images, training=False)).reshape(-1)
    assert np.allclose(prob, np.asarray(keras.ops.softmax(logits))[:, 1], atol=1e-6)
    # The loss the product trains with (binary cross-entropy on P(pneumonia)) is the study's.
    labels = np.array([0, 1, 1, 0])
    study_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    ours = keras.losses.BinaryCrossentropy()(labels.astype("float32"), model(images, training=False))
    assert float(ours) == pytest.approx(float(study_loss), rel=1e-4)


def test_a_download_failure_is_told_from_other_errors():
    import urllib.error

    try:
        try:
            raise urllib.error.URLError("no route to host")
        except urllib.error.URLError:
            raise Exception("URL fetch failure on https://example: None -- no route to host")  # noqa: B904
    except Exception as wrapped:  # how keras.utils.get_file reports it
        assert _download_failed(wrapped)
    assert not _download_failed(ValueError("the weights do not fit this model: http is in this text"))
