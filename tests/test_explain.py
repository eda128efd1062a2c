"""Contracts of cxr_core.explain (Grad-CAM), on tiny models built like the project's: flat, 0..255 in, one sigmoid out.
(Drawing the map over an X-ray is cxr_core.heatmap's, tested in test_heatmap.py.)"""

import gc
import weakref

import keras
import numpy as np
import pytest

from cxr_core import explain

SIZE = 32


def tiny_model(keep: str | None = None) -> keras.Model:
    """Input -> Rescaling -> conv_a -> ReLU -> conv_last -> GAP -> Dense(1, sigmoid).

    keep="left"/"right" zeroes the other half of the image with Cropping2D +
    ZeroPadding2D (real layers, no Lambda), so the output depends on that half only.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 1))
    x = inputs
    if keep is not None:
        drop = ((0, 0), (0, SIZE // 2)) if keep == "left" else ((0, 0), (SIZE // 2, 0))
        x = keras.layers.ZeroPadding2D(drop)(keras.layers.Cropping2D(drop)(x))
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(4, 3, name="conv_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, name="conv_last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def noise_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 built flat on a 3-channel copy of the 1-channel input, as models.py does."""
    inputs = keras.Input((64, 64, 1))
    rgb = keras.layers.Concatenate()([inputs, inputs, inputs])
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_tensor=rgb)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def assert_valid_heatmap(heatmap, size):
    assert heatmap.shape == (size, size) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


@pytest.mark.parametrize("shape", [(SIZE, SIZE, 1), (1, SIZE, SIZE, 1), (SIZE, SIZE)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_heatmap_has_input_size_and_unit_range(model, shape, dtype):
    heatmap = explain.gradcam(model, noise_image().astype(dtype).reshape(shape))
    assert_valid_heatmap(heatmap, SIZE)
    assert heatmap.max() == pytest.approx(1.0)  # scaled so the hottest pixel is 1


def test_a_map_of_at_least_eight_by_eight_is_preferred_to_a_smaller_last_one():
    from cxr_core.models import build_model
    from cxr_core.registry import default_settings

    settings = default_settings("regularized_cnn")
    # At 64 px block 4 before its pooling (block 5 is 2x2, its pooling 1x1); at 128 px block 5 before its pooling.
    for size, expected in ((64, "block4_relu"), (128, "block5_relu")):
        settings.image_size = size
        model = build_model(settings)
        name = explain.last_conv_layer_name(model)
        assert name == expected and tuple(model.get_layer(name).output.shape[1:3]) == (8, 8)


@pytest.mark.parametrize("name", ["baseline_cnn", "regularized_cnn"])
@pytest.mark.parametrize("recipe", ["improved", "study"])
def test_every_scratch_cnn_gets_a_heat_map_of_eight_by_eight_or_finer_at_64_px(name, recipe):
    from cxr_core.models import build_model
    from cxr_core.registry import default_settings

    settings = default_settings(name, recipe)
    settings.image_size = 64
    model = build_model(settings)
    side = model.get_layer(explain.last_conv_layer_name(model)).output.shape[1:3]
    assert min(side) >= 8
    heatmap = explain.gradcam(model, noise_image(size=64))
    assert_valid_heatmap(heatmap, 64)


def test_the_heat_map_of_a_trained_run_changes_when_its_weights_are_randomized(tiny_run, demo_dir):
    # Adebayo et al.'s sanity check on the 8x8 map of a 64 px regularized_cnn run.
    from cxr_core import images
    from cxr_core.inference import load_run

    store, run_id = tiny_run
    loaded = load_run(run_id, store)
    pixels = images.load_for_model(sorted((demo_dir / "test" / "PNEUMONIA").glob("*"))[0], loaded.image_size)
    trained = explain.gradcam(loaded.model, pixels, class_index=1)
    randomized = explain.gradcam(explain.randomized_copy(loaded.model), pixels, class_index=1)
    assert loaded.image_size == 64 and min(loaded.model.get_layer(explain.last_conv_layer_name(loaded.model))
                                           .output.shape[1:3]) >= 8
    assert not np.allclose(trained, randomized, atol=1e-3)


def test_finds_last_conv_layer_of_small_cnn(model):
    assert explain.last_conv_layer_name(model) == "conv_last"
    heatmap = explain.gradcam(model, noise_image(), layer_name="conv_a")
    assert_valid_heatmap(heatmap, SIZE)


def test_gradcam_through_flat_mobilenetv2(mobilenet):
    # At 64 px MobileNetV2's last maps are 2x2: the last 8x8 map is used instead.
    name = explain.last_conv_layer_name(mobilenet)
    assert tuple(mobilenet.get_layer(name).output.shape[1:3]) == (8, 8)
    heatmap = explain.gradcam(mobilenet, noise_image(size=64))
    assert_valid_heatmap(heatmap, 64)
    assert heatmap.max() == pytest.approx(1.0)


@pytest.mark.parametrize("keep", ["left", "right"])
def test_heatmap_lies_on_the_half_the_model_uses(keep):
    model = tiny_model(keep)
    image = noise_image(1)
    image[8:24, 20:28] = 255  # a bright patch in the right half, to tempt a wrong map
    heatmap = explain.gradcam(model, image)
    used = heatmap[:, : SIZE // 2] if keep == "left" else heatmap[:, SIZE // 2:]
    assert used.sum() / heatmap.sum() > 0.9
    # Changing the ignored half changes neither the prediction nor the map.
    other = image.copy()
    ignored = slice(SIZE // 2, None) if keep == "left" else slice(0, SIZE // 2)
    other[:, ignored] = noise_image(2)[:, ignored]
    np.testing.assert_allclose(explain.gradcam(model, other), heatmap, atol=1e-5)


def test_zero_gradient_gives_zeros_not_nan():
    model = tiny_model()
    dense = model.layers[-1]
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])
    heatmap = explain.gradcam(model, noise_image())
    assert_valid_heatmap(heatmap, SIZE)
    assert not heatmap.any()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_saturated_sigmoid_still_explains(sign):
    # P is exactly 1.0 (or 0.0) in float32, so d(P)/d(map) underflows; the logit's gradient does not.
    model = tiny_model()
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    image = noise_image()
    p_before = float(model(image[None].astype("float32"), training=False).numpy().ravel()[0])
    scale = sign * 1e4 * np.sign(p_before - 0.5)
    dense.set_weights([kernel * scale, bias])
    p = float(model(image[None].astype("float32"), training=False).numpy().ravel()[0])
    assert p in (0.0, 1.0)
    heatmap = explain.gradcam(model, image)
    assert_valid_heatmap(heatmap, SIZE)
    assert heatmap.max() == pytest.approx(1.0)


def test_default_class_is_the_predicted_one(model):
    image = noise_image(3)
    p = float(model(image[None].astype("float32"), training=False).numpy().ravel()[0])
    predicted = int(p >= 0.5)
    np.testing.assert_array_equal(explain.gradcam(model, image),
                                  explain.gradcam(model, image, class_index=predicted))
    # Evidence for the other class sits where the predicted class's evidence is weak.
    other = explain.gradcam(model, image, class_index=1 - predicted)
    assert_valid_heatmap(other, SIZE)
    assert not np.allclose(other, explain.gradcam(model, image))


def test_frozen_model_is_explained_too():
    # As mobilenetv2_frozen and densenet121_frozen are: the map must not depend on trainability.
    model = tiny_model()
    expected = explain.gradcam(model, noise_image())
    model.trainable = False
    np.testing.assert_allclose(explain.gradcam(model, noise_image()), expected, atol=1e-6)


def test_grad_model_is_built_once_and_freed_with_the_model():
    model = tiny_model()
    explain.gradcam(model, noise_image(0))
    first = explain._CAM_FUNCTIONS[model]["conv_last"]
    explain.gradcam(model, noise_image(1))
    assert explain._CAM_FUNCTIONS[model]["conv_last"] is first
    # The cache must not keep a replaced model (and its weights) alive.
    model_ref = weakref.ref(model)
    del model, first
    gc.collect()
    assert model_ref() is None


def test_model_without_convolution_is_a_clear_error():
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense_only = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    with pytest.raises(ValueError, match="no convolutional feature map"):
        explain.last_conv_layer_name(dense_only)
    with pytest.raises(ValueError, match="no convolutional feature map"):
        explain.gradcam(dense_only, noise_image())


def test_nested_base_says_to_build_flat():
    inner_in = keras.Input((SIZE, SIZE, 1))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3)(inner_in), name="base")
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    nested = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    with pytest.raises(ValueError, match="input_tensor="):
        explain.last_conv_layer_name(nested)


def test_wrong_image_size_is_a_clear_error(model):
    with pytest.raises(ValueError, match="model's input size"):
        explain.gradcam(model, noise_image(size=48))
