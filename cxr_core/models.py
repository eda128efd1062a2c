"""The five study models, built from real Keras layers only (no Lambda).

Every model takes (S, S, 1) grayscale pixels in 0..255 (the output of
`images.preprocess`) and returns one sigmoid: P(pneumonia). Scaling lives
inside the model, so training, evaluation and prediction cannot disagree.

Pretrained bases are built flat with `input_tensor=`: their layers sit
directly in `model.layers`, which Grad-CAM needs to reach the last convolution.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from . import registry
from .config import TrainSettings, UserError
from .registry import Weights


def weight_file_name(family: str, image_size: int) -> str:
    """The file Keras looks for in ~/.keras/models for an ImageNet base without its top."""
    if family == "mobilenetv2":
        # Keras ships MobileNetV2 weights for these input sizes and falls back to 224 otherwise.
        rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _augmentation(x, s: TrainSettings):
    return _study_augmentation(x, s) if s.augmentation == "study" else _improved_augmentation(x, s)


def _study_augmentation(x, s: TrainSettings):
    # The seed study's (the Keras tutorial's): mirrored chests included, as it did.
    x = layers.RandomFlip("horizontal", seed=s.seed, name="aug_flip")(x)
    x = layers.RandomRotation(0.1, seed=s.seed, name="aug_rotate")(x)
    return layers.RandomZoom(0.1, seed=s.seed, name="aug_zoom")(x)


def _improved_augmentation(x, s: TrainSettings):
    # Small geometric and photometric changes that real radiographs show; no flips,
    # since a mirrored chest (heart on the right) is not a plausible image. Zooming in
    # goes further than out (s.zoom_in): films framed tightly around the chest read as
    # PNEUMONIA to a model that never saw them (see TrainSettings.zoom_in).
    seed = s.seed
    x = layers.RandomRotation(0.04, fill_mode="constant", seed=seed, name="aug_rotate")(x)
    x = layers.RandomZoom((-s.zoom_in, 0.1), fill_mode="constant", seed=seed, name="aug_zoom")(x)
    x = layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed, name="aug_shift")(x)
    x = layers.RandomContrast(0.3, value_range=(0, 255), seed=seed, name="aug_contrast")(x)
    x = layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed, name="aug_brightness")(x)
    return x


def bn_momentum(steps_per_epoch: int | None) -> float:
    """BatchNorm moving-average momentum that lets the statistics settle within one epoch.

    Validation runs on the moving statistics, which start at mean 0, variance 1. With
    0.9 and a small data set (the demo: 6 steps an epoch) they lag for several epochs,
    every validation image gets the same answer, and early stopping keeps a useless
    epoch. So the start value must weigh under 5% after one epoch: 0.05 ** (1 / steps),
    capped at 0.9 (what real data, ~116 steps an epoch, was benchmarked with).
    """
    if not steps_per_epoch:
        return 0.9
    return min(0.9, max(0.5, 0.05 ** (1 / steps_per_epoch)))


def _conv_block(x, filters: int, name: str, momentum: float = 0.9):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling2D(name=f"{name}_pool")(x)


def _plain_cnn(x, widths, batch_norm: bool = False, dropout: float = 0.0, momentum: float = 0.9,
               literal: bool = False):
    """The Keras tutorial's CNN: conv blocks with max pooling, Flatten, Dense 128, one sigmoid.

    literal=True is the study as written: RGB input (TensorFlow's loader repeats a gray film's value in
    three channels, so the first convolution has three-channel kernels and their initial scale) and
    two logits (see _two_logits)."""
    if literal:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    for i, filters in enumerate(widths):
        if batch_norm:
            x = _conv_block(x, filters, f"block{i + 1}", momentum)
        else:
            x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"block{i + 1}_conv")(x)
            x = layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return _two_logits(x) if literal else layers.Dense(1, activation="sigmoid", name="pneumonia")(x)


def _two_logits(x):
    """The study's head: two logits, NORMAL's and PNEUMONIA's (a Dense 2 kept as its two columns), and
    P(pneumonia) = softmax's PNEUMONIA column = sigmoid(PNEUMONIA's logit - NORMAL's), the one score every
    part of the product reads. Keras computes binary cross-entropy on that sigmoid from its logit, which
    is exactly the study's SparseCategoricalCrossentropy(from_logits=True) on the two logits, with the
    same numerical stability (through a softmax's probabilities the loss saturates and training stalls);
    argmax is P(pneumonia) >= 0.5."""
    normal = layers.Dense(1, name="logit_normal")(x)
    pneumonia = layers.Dense(1, name="logit_pneumonia")(x)
    difference = layers.Subtract(name="logit_difference")([pneumonia, normal])
    return layers.Activation("sigmoid", name="pneumonia")(difference)


def baseline_cnn(inputs, s: TrainSettings, steps_per_epoch=None):
    return _plain_cnn(inputs, (32, 64, 128))


def study_baseline_cnn(inputs, s: TrainSettings, steps_per_epoch=None):
    return _plain_cnn(_augmentation(inputs, s) if s.augment else inputs, (16, 32, 64), literal=True)


def study_regularized_cnn(inputs, s: TrainSettings, steps_per_epoch=None):
    x = _augmentation(inputs, s) if s.augment else inputs
    return _plain_cnn(x, (16, 32, 64), batch_norm=True, dropout=0.5, momentum=bn_momentum(steps_per_epoch),
                      literal=True)


def regularized_cnn(inputs, s: TrainSettings, steps_per_epoch=None):
    momentum = bn_momentum(steps_per_epoch)
    x = _augmentation(inputs, s) if s.augment else inputs
    x = layers.Rescaling(1 / 255, name="rescale")(x)
    # Narrow first blocks at full resolution keep a CPU epoch short; width grows as the map shrinks.
    for i, filters in enumerate((16, 32, 64, 128, 256)):
        x = _conv_block(x, filters, f"block{i + 1}", momentum)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return layers.Dense(1, activation="sigmoid", name="pneumonia")(x)


def _resolve_weights(weights: str, family: str, image_size: int):
    if weights in (None, "", Weights.NONE):
        return None
    if weights == Weights.IMAGENET:
        return Weights.IMAGENET.value
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} not found; pass --weights imagenet, none, or the path to a local "
                        f"{weight_file_name(family, image_size)}")
    return str(path)


def _download_failed(error: BaseException) -> bool:
    """Whether a failed ImageNet load was a failed download. Keras's get_file re-raises a
    urllib error (an OSError) as a plain Exception inside its except block, so the network
    error is on the exception's context chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def transfer(inputs, s: TrainSettings, steps_per_epoch=None):
    return _transfer(inputs, s, registry.get(s.model).family)[0]


def _transfer(inputs, s: TrainSettings, family: str):
    x = _augmentation(inputs, s) if s.augment else inputs
    # ImageNet networks expect three channels: repeat the gray one (a real layer, not a Lambda).
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if family == "mobilenetv2":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="mobilenet_scale")(x)  # mobilenet_v2.preprocess_input
        build = keras.applications.MobileNetV2
    else:
        # densenet.preprocess_input: 0..1, then ImageNet mean/std per channel.
        x = layers.Rescaling(1 / 255, name="densenet_scale")(x)
        x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2], name="imagenet_norm")(x)
        build = keras.applications.DenseNet121
    weights = _resolve_weights(s.weights, family, s.image_size)
    try:
        base = build(include_top=False, weights=weights, input_tensor=x)
    except Exception as error:
        if weights != Weights.IMAGENET:
            raise UserError(f"cannot load weights {weights}: {str(error)[:200]}") from None
        if not _download_failed(error):
            raise
        raise UserError(
            f"could not download the ImageNet weights for {family} ({type(error).__name__}); with no network, "
            f"download {weight_file_name(family, s.image_size)} elsewhere and put it in ~/.keras/models/, or pass "
            f"--weights PATH to that file, or --weights none to train from random initialisation"
        ) from None
    for layer in base.layers:
        layer.trainable = False
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return outputs, base


def build_model(settings: TrainSettings, steps_per_epoch: int | None = None) -> keras.Model:
    """The named study model, uncompiled. Transfer bases come back frozen.

    steps_per_epoch, when known, sets the BatchNorm momentum (see bn_momentum).
    """
    build = registry.get(settings.model).build_function(settings.recipe)
    keras.utils.set_random_seed(settings.seed)
    inputs = keras.Input((settings.image_size, settings.image_size, 1), name="image")
    outputs = build(inputs, settings, steps_per_epoch)
    return keras.Model(inputs, outputs, name=settings.model)


def unfreeze_top(model: keras.Model, from_layer: str) -> int:
    """Make the layers from `from_layer` on trainable (BatchNorm stays frozen); returns the count."""
    names = [layer.name for layer in model.layers]
    if from_layer not in names:
        raise ValueError(f"{model.name} has no layer {from_layer}")
    count = 0
    for layer in model.layers[names.index(from_layer):]:
        # Frozen BatchNorm keeps ImageNet statistics: small fine-tuning batches would wreck them.
        if not isinstance(layer, layers.BatchNormalization):
            layer.trainable = True
            count += 1
    return count
