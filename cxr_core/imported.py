"""Bring your own Keras model: store a `.keras`, `.h5` or SavedModel folder as a run.

    python -m cxr_core import-model regularized_cnn.keras --name colab --scale 0-255 --output logits2
    python -m cxr_core evaluate <run> --split test --data /path/to/chest_xray_test_dev

The project's pipeline hands every model (S, S, 1) pixels in 0..255 (images.preprocess) and
expects one P(pneumonia). An outside model says neither what range it expects nor what its
outputs mean, so the person declares it (InputHandling) and the import wraps the model in real
Keras layers that turn one into the other: Concatenate repeats the gray channel for an RGB
model, Rescaling divides by 255 for a model that expects 0..1, and a frozen Dense(1) turns two
logits into sigmoid(z_pneumonia - z_normal) (= the softmax's PNEUMONIA column, exactly) or
picks a probability column. The wrapped model is written as the run's model.keras, so loading,
evaluation, prediction and Grad-CAM follow the one path every trained run follows, and the
images go through the one decoder and preprocessing step.

The imported model's layers are copied flat into the wrapper (a nested model would hide its
convolutions from Grad-CAM). A SavedModel folder that Keras can only call (TF 2.x
`model.save(dir)`/`model.export`) is copied beside the run as model.savedmodel/ and called
through keras.layers.TFSMLayer: it predicts, but has no layers to take a heat map from.

Safety: a `.keras` or `.h5` whose configuration holds a Lambda layer (arbitrary Python) is
refused before anything is deserialised, and `.keras` files load with safe_mode=True. Nothing is
stored until the model loaded, took an image and gave one probability per image: the run is
written into a hidden temp folder and moved into the store with os.replace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import CLASSES, UserError
from .model_files import FIX, model_format, read_model, sha256_of
from .store import RunState, RunStore, atomic_write_json

RECIPE = "imported"
SAVEDMODEL_DIR = "model.savedmodel"
SCALES = ("0-255", "0-1")
OUTPUTS = ("sigmoid", "logits2", "probs2")
MAX_BYTES = 500 * 1024 * 1024  # the dashboard's upload limit; the CLI takes the same


@dataclass
class InputHandling:
    """What the model file cannot say about itself; stored in the run's settings."""

    image_size: int | None = None  # None: read from the model's input shape
    channels: int | None = None  # 1 or 3; None: read from the model
    scale: str = "0-255"  # the range the model expects: 0-255 when it rescales inside (the Keras tutorial's)
    output: str = "sigmoid"  # one sigmoid, two logits, or two probabilities
    classes: tuple[str, ...] = CLASSES  # the order of the two outputs (or: the sigmoid's positive class is the 2nd)

    def check(self) -> None:
        if self.scale not in SCALES:
            raise UserError(f"--scale {self.scale}: use 0-255 (the model rescales inside) or 0-1")
        if self.output not in OUTPUTS:
            raise UserError(f"--output {self.output}: use one of {', '.join(OUTPUTS)}")
        if sorted(self.classes) != sorted(CLASSES) or len(self.classes) != 2:
            raise UserError(f"--classes {','.join(self.classes)}: name both classes once, e.g. NORMAL,PNEUMONIA")
        if self.channels not in (None, 1, 3):
            raise UserError(f"--channels {self.channels}: use 1 (grayscale) or 3 (RGB)")
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise UserError(f"--image-size {self.image_size}: give a side from 16 to 1024 pixels")


def declared_shape(input_shape, handling: InputHandling) -> tuple[int, int]:
    """(image size, channels): the declared ones, checked against the model's (batch, h, w, c) input."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise UserError(f"the model takes input of shape {shape}, not images (batch, height, width, channels)")
    _, height, width, channels = shape
    if height is not None and width is not None and height != width:
        raise UserError(f"the model takes {height}x{width} images; only square inputs are supported")
    size = handling.image_size or height
    if size is None:
        raise UserError("the model accepts any image size: pass --image-size PX (the size it was trained at)")
    if height is not None and size != height:
        raise UserError(f"--image-size {size} but the model takes {height}x{width} images; pass --image-size {height}")
    channels_used = handling.channels or channels or 3
    if channels is not None and channels != channels_used:
        raise UserError(f"--channels {channels_used} but the model takes {channels} channels")
    if channels_used not in (1, 3):
        raise UserError(f"the model takes {channels_used} channels; only 1 (grayscale) and 3 (RGB) are supported")
    return int(size), int(channels_used)


def _flat_call(model, x):
    """Call fresh copies of `model`'s layers on x, so they sit flat in the caller's graph."""
    import keras

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = layer.__class__.from_config(layer.get_config())(x)
        return x
    outputs = []

    def remember(layer, *args, **kwargs):
        result = layer(*args, **kwargs)
        outputs.append(result)
        return result

    # clone_model runs the graph on x with cloned layers; the clone it returns starts at a new
    # input, so the output connected to x is taken as the last layer call makes it.
    keras.models.clone_model(model, input_tensors=x, call_function=remember)
    return outputs[-1]


def _head_weights(handling: InputHandling) -> tuple[np.ndarray, np.ndarray, str]:
    """(kernel, bias, activation) of the frozen Dense(1) that turns the model's output into P(pneumonia)."""
    pneumonia = handling.classes.index("PNEUMONIA")
    if handling.output == "sigmoid":  # P(2nd class); with the classes reversed P(pneumonia) = 1 - p
        sign = 1.0 if pneumonia == 1 else -1.0
        return np.array([[sign]]), np.array([0.0 if pneumonia == 1 else 1.0]), "linear"
    column = np.array([[-1.0], [1.0]]) if pneumonia == 1 else np.array([[1.0], [-1.0]])
    if handling.output == "logits2":  # softmax(z)[p] = sigmoid(z_p - z_other)
        return column, np.zeros(1), "sigmoid"
    return np.maximum(column, 0.0), np.zeros(1), "linear"  # probs2: the PNEUMONIA column as it is


def wrap(model, size: int, channels: int, handling: InputHandling):
    """The project-shaped model: (S, S, 1) pixels in 0..255 -> one P(pneumonia), the outside model flat inside."""
    import keras
    from keras import layers

    image = keras.Input((size, size, 1), name="image")
    x = layers.Concatenate(name="import_gray_to_rgb")([image, image, image]) if channels == 3 else image
    if handling.scale == "0-1":
        x = layers.Rescaling(1 / 255, name="import_scale")(x)
    x = _flat_call(model, x) if isinstance(model, keras.Model) else model(x)
    if isinstance(x, dict):  # a SavedModel signature answers a dict of named outputs
        if len(x) != 1:
            raise UserError(f"the model has {len(x)} outputs ({', '.join(x)}); import a model with one output")
        x = next(iter(x.values()))
    expected = 1 if handling.output == "sigmoid" else 2
    if tuple(x.shape[1:]) != (expected,):
        raise UserError(f"the model's output is shaped {tuple(x.shape)} but --output {handling.output} means "
                        f"{expected} value(s) per image; pass the --output that matches it")
    kernel, bias, activation = _head_weights(handling)
    head = layers.Dense(1, activation=activation, trainable=False, name="import_pneumonia")
    if handling.output == "sigmoid" and kernel[0, 0] == 1.0:
        wrapped = keras.Model(image, x, name="imported")  # already P(pneumonia): no head at all
    else:
        wrapped = keras.Model(image, head(x), name="imported")
        head.set_weights([kernel, bias])
    if isinstance(model, keras.Model):
        for layer in model.layers:
            if layer.weights:
                wrapped.get_layer(layer.name).set_weights(layer.get_weights())
    return wrapped


def savedmodel_layer(folder: Path):
    """A TFSMLayer on the folder's serving signature (Keras 2's model.save) or `serve` endpoint (model.export)."""
    import keras

    last = None
    for endpoint in ("serving_default", "serve"):
        try:
            return keras.layers.TFSMLayer(str(folder), call_endpoint=endpoint)
        except Exception as error:  # noqa: PERF203  a missing endpoint: try the next one
            last = error
    raise UserError(f"{folder.name}: the SavedModel has no callable serving endpoint ({type(last).__name__}); "
                    f"{FIX}") from None


def savedmodel_input_shape(folder: Path):
    """The (batch, h, w, c) input the SavedModel's serving signature declares."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(folder))
        signature = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()))
    except Exception as error:
        raise UserError(f"{folder.name} cannot be loaded as a SavedModel ({type(error).__name__}); {FIX}") from None
    specs = list(signature.structured_input_signature[1].values())
    if len(specs) != 1:
        raise UserError(f"the SavedModel takes {len(specs)} inputs; import a model with one image input")
    return tuple(specs[0].shape.as_list())


def callable_model(folder: Path, settings: dict):
    """The wrapped model of a stored SavedModel run (store.load_model calls it)."""
    handling = InputHandling(**{k: settings[k] for k in ("scale", "output")}, classes=tuple(settings["classes"]))
    return wrap(savedmodel_layer(folder), settings["image_size"], settings["channels"], handling)


NO_HEATMAP = ("this imported model is a SavedModel that Keras can only call (no layers), so Grad-CAM has no "
              "convolution to look inside; import it as .keras or .h5 for a heat map")


def _build(source: Path, fmt: str, handling: InputHandling):
    """(wrapped model, image size, channels) of the file, checked on one black image."""
    try:
        if fmt == "savedmodel":
            size, channels = declared_shape(savedmodel_input_shape(source), handling)
            model = wrap(savedmodel_layer(source), size, channels, handling)
        else:
            outside = read_model(source, fmt)
            if len(outside.inputs) != 1 or len(outside.outputs) != 1:
                raise UserError(f"{source.name} has {len(outside.inputs)} inputs and {len(outside.outputs)} "
                                "outputs; import a model with one image input and one output")
            size, channels = declared_shape(outside.inputs[0].shape, handling)
            model = wrap(outside, size, channels, handling)
        probe = np.asarray(model(np.zeros((2, size, size, 1), np.float32), training=False))
    except UserError:
        raise
    except Exception as error:  # Keras and TensorFlow raise many types for a model they cannot run
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{source.name} could not be run on a test image ({type(error).__name__}: {first}); "
                        "check --image-size, --channels and --output") from None
    if probe.shape != (2, 1) or not np.all(np.isfinite(probe)):
        raise UserError(f"{source.name} gave {probe.shape} non-probability output on a test image; check --output")
    return model, size, channels


def import_model(path, name: str, store: RunStore, handling: InputHandling, *, threshold: float = 0.5,
                 threshold_on=None, target_sensitivity: float = 0.95) -> str:
    """Store the model at `path` as a finished run; returns its id. Nothing is stored on any error.

    threshold_on: a labelled folder (ROOT/test/{NORMAL,PNEUMONIA} or ROOT/{NORMAL,PNEUMONIA}) whose
    images choose the threshold by calibration.site_threshold; else `threshold` is fixed."""
    source = Path(path).expanduser()
    handling.check()
    if not 0.0 < threshold < 1.0:
        raise UserError(f"--threshold {threshold}: give a probability between 0 and 1")
    fmt = model_format(source)
    size_on_disk = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) if source.is_dir() else source.stat().st_size
    if size_on_disk > MAX_BYTES:
        raise UserError(f"{source.name} is {size_on_disk / 2**20:.0f} MB; at most {MAX_BYTES // 2**20} MB is taken")
    model, size, channels = _build(source, fmt, handling)
    choice = {"threshold": float(threshold), "rule_name": "fixed", "rule": f"fixed at {threshold:g} (declared on import)"}
    if threshold_on is not None:
        choice = labelled_threshold(model, size, threshold_on, target_sensitivity)
    settings = dict(asdict(handling), model=safe_name(name), recipe=RECIPE, image_size=size, channels=channels,
                    classes=list(handling.classes), format=fmt, source_name=source.name,
                    source_sha256=sha256_of(source), target_sensitivity=target_sensitivity,
                    threshold_rule="fixed" if threshold_on is None else "sensitivity", fixed_threshold=threshold)
    return _store(store, settings, choice, model, source if fmt == "savedmodel" else None)


def labelled_threshold(model, size: int, folder, target_sensitivity: float) -> dict:
    """calibration.site_threshold on every image of a labelled folder (its test split when it has one)."""
    from . import data as data_mod
    from . import pipeline
    from .calibration import site_threshold
    from .inference import predict_rows

    root = data_mod.resolve_root(folder, require_train=False)
    manifest = data_mod.scan_folder(root, require_train=False).manifest
    part = manifest[manifest.source_split == "test"]
    part = part if not part.empty else manifest
    if part["label"].nunique() < 2:
        raise UserError(f"--threshold-on {root}: needs labelled images of both classes (NORMAL and PNEUMONIA)")
    cache = pipeline.build_cache(part["path"].tolist(), size)
    part = pipeline.with_cache_rows(part, cache)
    choice = site_threshold(part["label"].to_numpy(), predict_rows(model, cache, part["row"]), target_sensitivity)
    return {**choice, "rule_name": "site", "data_dir": str(root), "n": int(len(part))}


def safe_name(name: str) -> str:
    """A run name usable in a run id (store.RUN_ID): letters, digits, _ and . only."""
    cleaned = "".join(c if c.isalnum() or c in "_." else "_" for c in (name or "").strip())[:60].strip("._")
    if not cleaned:
        raise UserError("--name: give the model a name of letters, digits or _ (e.g. --name colab_cnn)")
    return cleaned


def _store(store: RunStore, settings: dict, choice: dict, model, savedmodel: Path | None) -> str:
    """Write the run into a hidden folder in the store, then move it into place in one step."""
    store.root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".importing-", dir=store.root))
    try:
        atomic_write_json(temp / "settings.json", dict(settings, data_dir=""))
        atomic_write_json(temp / "threshold.json", choice)
        if savedmodel is not None:
            shutil.copytree(savedmodel, temp / SAVEDMODEL_DIR)
        else:
            model.save(temp / "model.keras")
        now = time.time()
        atomic_write_json(temp / "status.json", {"state": RunState.DONE, "created": now, "finished": now,
                                                  "imported": True})
        for _ in range(100):
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings['model']}-{os.urandom(2).hex()}"
            target = store.run_path(run_id)
            if not target.exists():
                os.replace(temp, target)
                return run_id
        raise UserError("could not find a free run id; try again")
    finally:
        shutil.rmtree(temp, ignore_errors=True)
