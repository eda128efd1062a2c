"""The model registry: one `ModelSpec` per model, and the two recipes every model can be trained with.

Everything that differs between models lives here: name, description, builder,
family, whether ImageNet weights exist, how it fine-tunes, and its settings
under each recipe. Config, models, train, the Lesson, the pages and the
benchmarks read this table; adding a model is one `register(ModelSpec(...))`
and its builder. No TensorFlow import: pages read the registry too.

    from cxr_core import registry
    registry.names()                                   # what `train --model` accepts
    registry.default_settings("regularized_cnn")       # our recipe
    registry.default_settings("regularized_cnn", "study")  # the seed study's recipe

Recipes:
- "improved" (the default): the project's best measured recipe per model.
- "study": the seed study as it describes itself, filled in from the Keras
  "Image classification" tutorial it follows where it is silent (see STUDY_NOTES).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .config import TrainSettings, UserError


class Weights(StrEnum):
    """Where a transfer model's base starts; any other value of settings.weights is a local file."""

    IMAGENET = "imagenet"
    NONE = "none"


class Recipe(StrEnum):
    IMPROVED = "improved"
    STUDY = "study"


RECIPE_TEXT = {
    Recipe.IMPROVED: "ours: the best measured recipe (validation-chosen threshold, class weights, early stopping)",
    Recipe.STUDY: "the seed study's: 180 px, Adam 1e-3, 10 epochs, no early stopping, no class weights, threshold 0.5",
}

# What the study states and what the Keras tutorial it follows fills in; shown by `train --help`,
# the Train page and docs, so that every assumption is written where it is used.
STUDY_NOTES = (
    "180x180 input, Rescaling 1/255, Adam at 1e-3, 10 epochs, no early stopping, no class weights: as the study states.",
    "Conv2D widths 16/32/64 (3x3, ReLU, same padding), each followed by 2x2 max pooling, then Flatten and "
    "Dense 128: the Keras tutorial's, since the study gives no widths.",
    "Two logits (NORMAL's and PNEUMONIA's, a Dense 2 kept as its two columns) trained with the study's "
    "SparseCategoricalCrossentropy(from_logits=True), computed as binary cross-entropy on sigmoid(PNEUMONIA's "
    "logit - NORMAL's), the same value; that sigmoid, softmax's PNEUMONIA column, is P(pneumonia).",
    "RGB input, as TensorFlow's loader gives it: a gray film's value repeated in three channels, so the first "
    "convolution has three-channel kernels.",
    "Images are padded to square (aspect kept) before resizing, the project's one preprocessing path; the "
    "tutorial's loader squashes them. The shared copy is already square, so there the two agree.",
    "regularized_cnn adds the study's augmentation (RandomFlip horizontal, RandomRotation 0.1, RandomZoom 0.1), "
    "BatchNormalization after each convolution and Dropout 0.5 after Dense 128 (the study names these layers, "
    "not where they sit).",
    "Transfer models: ImageNet base frozen, global average pooling, Dropout 0.3 and one sigmoid (the study says "
    "'new head'); the same augmentation; MobileNetV2 fine-tuning trains the head for a third of the epochs at "
    "1e-3, then the top blocks at 1e-4 (the study says 'a small learning rate').",
    "Trained on all of train: validation is still carved by patient to draw the curves (the study drew them on "
    "the official 16-image val split), and its images are trained on too, so nothing is chosen on it and the "
    "Home page never picks a run by it.",
)

# Settings every model shares under the study recipe (TrainSettings' defaults are the improved recipe's).
_STUDY_COMMON = dict(recipe=Recipe.STUDY, image_size=180, epochs=10, batch_size=32, learning_rate=1e-3,
                     lr_schedule="constant", early_stopping_patience=0, class_weighting=False,
                     threshold_rule="fixed", augment=True, augmentation="study", train_on_validation=True)

Builder = Callable  # (inputs, settings, steps_per_epoch) -> outputs tensor


@dataclass(frozen=True)
class ModelSpec:
    """One model: what it is, how to build it, and its settings under each recipe.

    builder / study_builder: a callable or "module:function" (imported when a model is
    built, so reading the registry never loads TensorFlow). study_builder defaults to builder.
    """

    name: str
    description: str
    builder: Builder | str
    study_builder: Builder | str | None = None
    family: str = "cnn"  # "cnn", or the keras.applications family: "mobilenetv2", "densenet121"
    pretrained: bool = False  # ImageNet weights exist: the weights choice applies
    # Fine-tuning: the layer from which the base is unfrozen after the head has trained
    # for a third of the epochs (at ten times the learning rate); None = one phase.
    finetune_from: str | None = None
    improved: dict = field(default_factory=dict)  # settings over TrainSettings' defaults
    study: dict = field(default_factory=dict)  # settings over _STUDY_COMMON

    def settings(self, recipe: str = Recipe.IMPROVED) -> TrainSettings:
        if recipe not in tuple(Recipe):
            raise UserError(f"unknown recipe {recipe!r}; choose one of: {', '.join(Recipe)}")
        overrides = self.improved if recipe == Recipe.IMPROVED else {**_STUDY_COMMON, **self.study}
        return replace(TrainSettings(model=self.name), **overrides)

    def build_function(self, recipe: str = Recipe.IMPROVED) -> Builder:
        builder = self.study_builder if recipe == Recipe.STUDY and self.study_builder else self.builder
        if callable(builder):
            return builder
        module, _, name = builder.partition(":")
        return getattr(importlib.import_module(module), name)


_REGISTRY: dict[str, ModelSpec] = {}
# Roles the pages, the Lesson and the benchmarks refer to, so a model's name is written once.
DEFAULT_MODEL = "regularized_cnn"  # the Train page's first choice, the Lesson's and benchmarks' model
REFERENCE_MODEL = "baseline_cnn"  # the plain CNN every other model is measured against


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a model; it appears in `train --model`, the Train page and the Lesson's lists."""
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def default_settings(model: str, recipe: str = Recipe.IMPROVED) -> TrainSettings:
    """A model's settings under a recipe: the improved one (ours) unless recipe='study'."""
    return get(model).settings(recipe)


def descriptions() -> dict[str, str]:
    return {name: spec.description for name, spec in _REGISTRY.items()}


def from_scratch() -> tuple[str, ...]:
    return tuple(n for n, s in _REGISTRY.items() if not s.pretrained)


def pretrained() -> tuple[str, ...]:
    return tuple(n for n, s in _REGISTRY.items() if s.pretrained)


def description(model: str) -> str:
    return get(model).description


_TRANSFER_IMPROVED = dict(epochs=8, image_size=224, weights=Weights.IMAGENET, learning_rate=1e-3)

register(ModelSpec(
    "baseline_cnn",
    "The seed study's plain CNN: three convolution + max-pooling blocks, a flattened 128-unit dense layer and "
    "one sigmoid output, trained from scratch with no augmentation and no regularisation. It is the reference "
    "point: it fits the training images very well and shows what overfitting to one hospital's images looks "
    "like on new ones.",
    builder="cxr_core.models:baseline_cnn", study_builder="cxr_core.models:study_baseline_cnn",
    improved=dict(epochs=8, augment=False, image_size=128), study=dict(augment=False)))
register(ModelSpec(
    "regularized_cnn",
    "A small CNN trained from scratch with the regularisers that made the seed study's best model: random "
    "rotation, zoom, shift and contrast changes of each training image (no left-right flips: the heart is on "
    "the left), batch normalisation after every convolution, global average pooling and dropout 0.5. It learns "
    "what pneumonia looks like rather than memorising particular images, and trains on a laptop CPU in minutes.",
    builder="cxr_core.models:regularized_cnn", study_builder="cxr_core.models:study_regularized_cnn"))
register(ModelSpec(
    "mobilenetv2_frozen",
    "Transfer learning: MobileNetV2, a compact network pre-trained on ImageNet photographs, used as a fixed "
    "feature extractor. Only a new classification head is trained. Fast, and shows how far features learnt on "
    "everyday photos carry over to radiographs.",
    builder="cxr_core.models:transfer", family="mobilenetv2", pretrained=True,
    improved=_TRANSFER_IMPROVED, study=dict(weights=Weights.IMAGENET)))
register(ModelSpec(
    "mobilenetv2_finetune",
    "MobileNetV2 as above, but after the new head is trained the top blocks of the network are unfrozen and "
    "trained further with a small learning rate, so the features adapt to chest X-rays. Usually better than the "
    "frozen version, at a higher risk of overfitting.",
    builder="cxr_core.models:transfer", family="mobilenetv2", pretrained=True,
    finetune_from="block_14_expand",  # the last three inverted-residual blocks
    improved={**_TRANSFER_IMPROVED, "learning_rate": 1e-4},
    study=dict(weights=Weights.IMAGENET, learning_rate=1e-4)))
register(ModelSpec(
    "densenet121_frozen",
    "DenseNet121 pre-trained on ImageNet, frozen, with a new head: the family of network used by CheXNet for "
    "chest X-ray reading. Larger and slower than MobileNetV2; its dense connections reuse features across layers.",
    builder="cxr_core.models:transfer", family="densenet121", pretrained=True,
    improved={**_TRANSFER_IMPROVED, "epochs": 6}, study=dict(weights=Weights.IMAGENET)))

# The seed study's five models, in its order (names() also holds any model registered later).
STUDY_MODELS: tuple[str, ...] = names()
