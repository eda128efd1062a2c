"""Grad-CAM: where in the X-ray the model found its evidence.

Follows the keras-io example (examples/vision/grad_cam.py): a second model
maps the image to the last convolutional feature map and the class score; the
score's gradient, averaged over space, weights the feature-map channels.

    heatmap = gradcam(model, image)            # (S, S) float32 in [0, 1]
    rgb = overlay(image[..., 0], heatmap)      # (S, S, 3) uint8 for st.image

The project's models end in Dense(1, sigmoid) = P(pneumonia). Grad-CAM is
taken on the logit, not the probability: a confident model has a saturated
sigmoid whose gradient underflows to zero, which would blank the heat map
exactly when the model is most sure.
"""

from __future__ import annotations

import threading
import weakref

import keras
import numpy as np
import tensorflow as tf

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)

# model -> {layer name: compiled Grad-CAM}; weak so a retrained model that
# replaces the old one in the Streamlit cache frees its grad model too.
_CAM_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # shared layers and layers never called have no single output
        return None


# A map of 4x4 is sixteen blocks over a chest, which a class cannot read as "where the model looked":
# where a later map would be smaller than this, the last one at least this large is used (at 64 px,
# regularized_cnn's block 4 before its pooling, 8x8). The model is unchanged, so is its ranking: only
# the layer the explanation reads from moves, to one with more positions and fewer learned features.
MIN_MAP_SIDE = 8
# The layer cxr_core.ensemble averages its members with; an ensemble's map is its members' maps averaged.
ENSEMBLE_LAYER = "ensemble_mean"


def last_conv_layer_name(model) -> str:
    """The last layer at or after the first convolution whose output is a (batch, h, w, c) map with
    h, w >= MIN_MAP_SIDE, else the last with h, w > 1.

    That is the last convolution's (activated, pooled or normalised) output,
    the finest-grained spatial evidence before global pooling or Flatten
    throws position away. Layers before the first convolution (rescaling,
    augmentation) are 4-D too but hold raw pixels, not learned features.
    """
    seen_conv, name, large = False, None, None
    for layer in model.layers:
        seen_conv = seen_conv or isinstance(layer, _CONV_TYPES)
        shape = _output_shape(layer)
        if seen_conv and shape is not None and len(shape) == 4 and all(
                s is None or s > 1 for s in shape[1:3]):
            name = layer.name
            # A zero-padded map holds a border that is no evidence; the map it pads is the same evidence.
            if all(s is None or s >= MIN_MAP_SIDE for s in shape[1:3]) and not isinstance(
                    layer, keras.layers.ZeroPadding2D):
                large = layer.name
    name = large or name
    if name is None:
        raise ValueError(
            f"model {model.name!r} has no convolutional feature map with spatial size above 1 "
            "among its top-level layers, so Grad-CAM has nothing to weight. If its pretrained "
            "base is nested as a sub-model, rebuild it flat with input_tensor= (see models.py).")
    return name


def _logit_head(model):
    """(tensor feeding the score, function from that tensor to the logit) for this model."""
    last = model.layers[-1]
    if getattr(getattr(last, "activation", None), "__name__", "") == "sigmoid":
        if isinstance(last, keras.layers.Dense):
            kernel, bias = last.kernel, last.bias
            # Recompute the Dense layer without its sigmoid: same weights, so same score ranking.
            return last.input, lambda x: keras.ops.matmul(x, kernel) + (0.0 if bias is None else bias)
        if isinstance(last, keras.layers.Activation):
            return last.input, lambda x: x
    return model.output, lambda x: x  # not a sigmoid head: use the score as it is


def _build_cam_function(model, layer_name: str):
    """Compile Grad-CAM for one (model, layer) at the model's input size.

    Compiled once because eager mode pays Python overhead per layer: on two CPU
    cores DenseNet121 takes ~2.5 s per map eagerly and ~0.05 s compiled, and
    the first (tracing) call costs about what one eager call does.
    """
    pre_score, to_logit = _logit_head(model)
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, pre_score])
    image_spec = tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32)

    @tf.function(input_signature=[image_spec, tf.TensorSpec((), tf.int32)], autograph=False)
    def cam_at_input_size(image, class_index):
        with tf.GradientTape() as tape:
            # Watch the input so the path feature map -> score is recorded even when no
            # variable is watched (frozen bases: Keras 3 keeps them watchable today, but
            # that is its implementation detail, not a promise).
            tape.watch(image)
            # training=False: dropout, batch-norm and augmentation layers as in prediction.
            feature_map, pre = grad_model(image, training=False)
            logit = tf.reshape(to_logit(pre), [-1])[0]
            # -1 means the predicted class (logit >= 0 <=> P(pneumonia) >= 0.5), like keras-io's
            # argmax; NORMAL's evidence is the opposite direction of the pneumonia logit.
            pneumonia = tf.logical_or(tf.equal(class_index, 1),
                                      tf.logical_and(tf.equal(class_index, -1), logit >= 0.0))
            score = tf.where(pneumonia, logit, -logit)
        grads = tape.gradient(score, feature_map)
        if grads is None:
            raise ValueError(f"the score does not depend on layer {layer_name!r}; pick a layer before the head")
        channel_weights = tf.reduce_mean(grads, axis=(0, 1, 2))
        cam = tf.nn.relu(tf.reduce_sum(feature_map[0] * channel_weights, axis=-1))
        return tf.image.resize(cam[..., None], tf.shape(image)[1:3], method="bilinear")[..., 0]

    return cam_at_input_size


def _cam_function(model, layer_name: str):
    with _LOCK:
        per_layer = _CAM_FUNCTIONS.setdefault(model, {})
        if layer_name not in per_layer:
            per_layer[layer_name] = _build_cam_function(model, layer_name)
        return per_layer[layer_name]


def members(model) -> list:
    """The member models of an ensemble run's model (cxr_core.ensemble), [] for any other model."""
    names = {layer.name for layer in model.layers}
    return [layer for layer in model.layers if isinstance(layer, keras.Model)] if ENSEMBLE_LAYER in names else []


def gradcam(model, image: np.ndarray, layer_name: str | None = None,
            class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heat map (S, S) float32 in [0, 1] at the image's own size.

    An ensemble's map is the mean of its members' maps (each at the image's size, each in [0, 1]),
    every member explaining the same class. A model Keras can only call (an imported SavedModel)
    has no layers to look inside: ValueError saying so.
    """
    parts = members(model)
    if parts and layer_name is None:
        maps = [single_gradcam(member, image, class_index=class_index) for member in parts]
        return np.mean(maps, axis=0).astype(np.float32)
    if any(isinstance(layer, keras.layers.TFSMLayer) for layer in model.layers):
        from .imported import NO_HEATMAP

        raise ValueError(NO_HEATMAP)
    return single_gradcam(model, image, layer_name, class_index)


def single_gradcam(model, image: np.ndarray, layer_name: str | None = None,
                   class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heat map of one (non-ensemble) model, (S, S) float32 in [0, 1] at the image's own size.

    image: (S, S), (S, S, C) or (1, S, S, C) in the model's input scale (0..255;
    the models rescale inside). class_index: 1 = evidence for PNEUMONIA,
    0 = for NORMAL, None = for the class the model predicts (P >= 0.5), as
    keras-io does with argmax. All zeros when the gradient is zero everywhere.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (S, S, C) or (1, S, S, C), got {np.shape(image)}")
    expected = tuple(model.inputs[0].shape[1:])
    if any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
        raise ValueError(f"image is {x.shape[1:]} but model {model.name!r} takes {expected}; "
                         "preprocess it to the model's input size first")
    if class_index not in (None, 0, 1):
        raise ValueError(f"class_index must be 0 (NORMAL), 1 (PNEUMONIA) or None, got {class_index!r}")
    cam_fn = _cam_function(model, layer_name or last_conv_layer_name(model))
    cam = cam_fn(tf.constant(x), tf.constant(-1 if class_index is None else class_index)).numpy()
    # Scaled after resizing to the map's own range, so the hottest pixel the person sees
    # is 1 and the coolest 0: a small CNN's map is often nearly flat (min close to max),
    # and dividing by the peak alone would paint the whole film one colour.
    peak, low = float(cam.max()), float(cam.min())
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros(x.shape[1:3], dtype=np.float32)
    low = max(low, 0.0)
    span = peak - low if peak - low > 1e-6 * peak else peak
    return np.clip(np.nan_to_num((cam - low) / span), 0.0, 1.0).astype(np.float32)


def randomized_copy(model, seed: int = 0):
    """The same architecture with every weight freshly initialised: Adebayo et al.'s (2018) model
    randomisation test. A saliency method whose map barely changes on this copy shows the image's
    edges, not what the trained model learnt.

    The global seed is set so the same model always gets the same random copy.
    """
    keras.utils.set_random_seed(seed)
    clone = keras.models.clone_model(model)  # new layers from the config: new initial weights
    clone.build(model.inputs[0].shape)
    return clone


def map_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two heat maps, the similarity Adebayo et al. report; NaN if one is flat."""
    from scipy.stats import spearmanr

    x, y = np.ravel(a), np.ravel(b)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def write_heatmap(loaded, source, out, *, label: str, randomized: bool = False, size: int | None = None,
                  alpha: float = 0.4) -> np.ndarray:
    """`predict --heatmap`: the Grad-CAM overlay of one file (evidence for `label`, the call the trained
    model made) written as a PNG of `size` pixels a side (default: the model's input size).

    With `randomized` the map comes from randomized_copy(model): the same picture for a trained and a
    random model would mean the map shows the image, not the model. Returns the RGB array written.
    """
    from PIL import Image

    from .config import CLASSES
    from .heatmap import heatmap_image
    from .images import preprocess, read_image_file

    gray = read_image_file(source, target_size=loaded.image_size)
    model = randomized_copy(loaded.model) if randomized else loaded.model
    pixels = preprocess(gray, loaded.image_size)[..., None]
    heat = gradcam(model, pixels, class_index=CLASSES.index(label))  # an ensemble's: its members' mean
    rgb = heatmap_image(gray, heat, alpha, size or loaded.image_size)
    Image.fromarray(rgb).save(out, format="PNG")
    return rgb
