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
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Index 1 is the positive class everywhere: sensitivity is pneumonia recall.
CLASSES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
# How a run's decision threshold can be chosen on validation (see evaluate.choose_threshold).
THRESHOLD_RULES: tuple[str, ...] = ("sensitivity", "youden", "fixed")
# The study's figures of merit, in the order every table shows them (keys of an evaluation's JSON).
METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "macro_f1", "auc")
METRIC_LABELS = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                 "macro_f1": "macro F1", "auc": "AUC"}
# The short list run tables show.
HEADLINE_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "auc")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

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


def shown_path(path) -> str:
    """A folder as pages name it to a class: `~/...` under the server user's home, relative to the project
    (`../shared/data/...`) beside it, else its name alone. A room of students has no business with the
    server's own folders (temporary folders, other users' homes)."""
    path = Path(os.path.abspath(Path(path).expanduser()))  # links kept: ../shared may link elsewhere
    # A checkout in the temporary folder sits beside every other temporary folder: those keep their name only.
    never = (Path("/"), Path(os.path.abspath(tempfile.gettempdir())))
    for base, shown in ((Path(os.path.abspath(Path.home())), "~"), (PROJECT_ROOT.parent, "..")):
        if path.is_relative_to(base) and base not in never:
            return str(Path(shown) / path.relative_to(base)) if path != base else shown
    return path.name or str(path)


def teacher_key_from_env() -> str | None:
    """CXR_TEACHER_KEY, the key that unlocks the dashboard's controls for a class (ui/teacher.py); None when unset or empty."""
    return os.environ.get("CXR_TEACHER_KEY") or None


def max_queued(default: int = 8) -> int:
    """CXR_MAX_QUEUED: how many runs and scorings may wait for the worker at once.

    One worker trains everything in turn, so a longer queue holds the machine for hours."""
    value = os.environ.get("CXR_MAX_QUEUED", "").strip()
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UserError(f"CXR_MAX_QUEUED={value!r} is not a whole number of at least 1; "
                        f"set it to one, or unset it for the default {default}")
    return limit


@dataclass
class TrainSettings:
    """One training recipe. Defaults per model and recipe come from `registry.default_settings`;
    these field defaults are the improved recipe of regularized_cnn."""

    model: str = "regularized_cnn"
    # Which preset these settings started from (registry.Recipe): "improved" (ours) or "study".
    recipe: str = "improved"
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    # Square side in pixels; images are padded to square (aspect kept), then resized.
    # 64 px: on the official test split's dev half it ranked better than 96 or 128 px (AUC about
    # 0.965 against 0.955-0.958, docs/results.md) in under half the time; fine texture at higher
    # resolution is partly scanner-specific, and the network saturates less on validation, which
    # steadies the threshold chosen there.
    image_size: int = 64
    # Random rotation/zoom/shift/contrast inside the model, active only in fit().
    augment: bool = True
    # Which augmentation: "improved" (rotation, zoom-in, shift, contrast, brightness; no flips) or
    # "study" (the seed study's horizontal flip, rotation 0.1, zoom 0.1).
    augmentation: str = "improved"
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
    # Draws the patient-grouped split when set (else `seed` does): an ensemble's members share one
    # split while their seeds differ (cxr_core.ensemble).
    split_seed: int | None = None
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
    # "cosine" decay from learning_rate to 0 over the run, or "constant" (the study's plain Adam).
    lr_schedule: str = "cosine"
    # The threshold of threshold_rule "fixed" (the study's argmax of two outputs is 0.5).
    fixed_threshold: float = 0.5
    # Train on the validation images too (the study's recipe: it trained on all of train and drew its
    # curves on the official 16-image val split). Validation then only draws curves: a recipe that
    # chooses anything on it (early stopping, a threshold rule) must leave this off.
    train_on_validation: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
