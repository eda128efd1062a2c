"""Out-of-distribution check: say when an image is not a chest X-ray like those a run learnt from.

A model labels anything, a holiday photo included. So every prediction (the
Predict page, `predict`, batch prediction: all through `inference.classify`)
also says whether the image is in distribution, and if not, why:

1. Appearance, fixed limits (`images.appearance`, measured on the file before
   it is made gray): chest X-rays are gray (over 5% clearly coloured pixels
   fails), not blank (gray levels must span at least 40 of 255), and not mostly
   pure black and white as text, drawings and screenshots are (over 50% fails).
   Fixed, not fitted, because they describe radiographs rather than one data
   set; 400 Kaggle training images measured colour 0, spread >= 97, extremes <= 0.28.
2. Layout: the Mahalanobis distance of an 8x8 map of brightness and of edge
   strength of the image as the model sees it, to the training images' maps.
   Chest films share a layout (dark lungs beside a bright spine and heart,
   smooth shading); noise, text, checkerboards and gradients do not. It does
   not depend on the model, so it works for a barely trained one too (a model
   trained for 2 epochs has features too weak to flag text or checkerboards).
3. Features: the Mahalanobis distance of the model's penultimate features (the
   input of its final Dense layer, before dropout) to the training images':
   what the model itself has not seen the like of.

Means and Ledoit-Wolf shrunk covariances (stable with fewer images than
dimensions) come from training images. Each distance threshold is the larger of
the 99.5th percentile of the validation images' distances (which the fit never
saw), so each check passes at least 99.5% of validation X-rays and both at
least 99%, and a one-sided 99.5% prediction bound (Student t, on log distances)
from validation plus out-of-fold training distances (5 folds, each scored
against a fit without it). The bound matters when validation is small: the
demo's 14 validation images come from few patients and are more alike than new
images, and their maximum left a third of the demo's test X-rays refused.
`ood.json` records the thresholds and the fraction of validation images that
pass every check; `ood.npz` holds the means and precision matrices.

Rotated (90 degrees) and inverted X-rays are refused: the model was trained on
upright films with bone bright and never on these, so its output for them means
nothing. The layout check catches them, and when the image rotated back (or
inverted back) would pass, the warning says so: rotate it upright, or invert it.
Upside-down films are not reliably caught (their layout is close to upright's).

Runs trained before this check have no ood.npz: their predictions still work
and say "in_distribution": None, with no warning.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import images
from .config import UserError
from .store import atomic_write_bytes, atomic_write_json

PASS_QUANTILE = 0.995  # per distance; two distances together pass at least 99% of validation X-rays
MAX_COLOUR = 0.05  # an X-ray with a coloured annotation or ruler stays far below this
MIN_SPREAD = 40.0
MAX_EXTREMES = 0.5
GRID = 8  # layout cells a side: coarse enough for ~80 training images, fine enough to see lungs and spine
MAX_FIT_IMAGES = 2000  # enough for a 1280-dimension covariance with shrinkage; bounds the time training adds
MAX_APPEARANCE_IMAGES = 1000  # validation files decoded again to report the appearance checks' pass rate


# ---------------------------------------------------------------- the statistics


def layout_vectors(pixels: np.ndarray) -> np.ndarray:
    """(n, S, S[, 1]) uint8 model input -> (n, 2 * GRID * GRID): mean brightness and edge strength per cell."""
    x = np.asarray(pixels, dtype=np.float32).reshape(len(pixels), pixels.shape[1], pixels.shape[2])
    edges = np.zeros_like(x)
    edges[:, :, 1:] += np.abs(np.diff(x, axis=2))
    edges[:, 1:, :] += np.abs(np.diff(x, axis=1))
    cells = np.linspace(0, x.shape[1], GRID + 1).astype(int)  # uneven cells where S is not a multiple of GRID

    def pool(a):
        rows = np.add.reduceat(a, cells[:-1], axis=1) / np.diff(cells)[None, :, None]
        return (np.add.reduceat(rows, cells[:-1], axis=2) / np.diff(cells)[None, None, :]).reshape(len(a), -1)

    return np.concatenate([pool(x), pool(edges)], axis=1).astype(np.float64)


@dataclass
class Gaussian:
    """Where training vectors lie: their mean and shrunk inverse covariance."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Gaussian:
        from sklearn.covariance import LedoitWolf

        estimate = LedoitWolf().fit(np.asarray(vectors, dtype=np.float64))
        return cls(estimate.location_, estimate.precision_)

    def distance(self, vectors: np.ndarray) -> np.ndarray:
        centred = np.atleast_2d(np.asarray(vectors, dtype=np.float64)) - self.mean
        squared = np.einsum("ij,jk,ik->i", centred, self.precision.astype(np.float64), centred)
        return np.sqrt(np.maximum(squared, 0.0))


def held_out_distances(vectors: np.ndarray, rng: np.random.Generator, folds: int = 5) -> np.ndarray:
    """Each training vector's distance to a fit made without it (k-fold), as a new image would be scored."""
    fold = rng.permutation(len(vectors)) % folds
    distances = np.zeros(len(vectors))
    for k in range(folds):
        distances[fold == k] = Gaussian.fit(vectors[fold != k]).distance(vectors[fold == k])
    return distances


def threshold(validation: np.ndarray, held_out: np.ndarray) -> float:
    """Distance limit: at least PASS_QUANTILE of validation passes, and a new image passes with about that chance."""
    from scipy import stats

    # "higher": an observed distance, so at least PASS_QUANTILE of validation passes even for a few images.
    quantile = np.quantile(validation, PASS_QUANTILE, method="higher")
    logs = np.log(np.maximum(np.concatenate([validation, held_out]), 1e-9))
    n = len(logs)
    if n < 3:
        return float(quantile)
    spread = stats.t.ppf(PASS_QUANTILE, n - 1) * np.sqrt(1 + 1 / n) * logs.std(ddof=1)
    return float(max(quantile, np.exp(logs.mean() + spread)))


def appearance_problems(appearance: dict) -> list[str]:
    problems = []
    if appearance["colour"] > MAX_COLOUR:
        problems.append(f"colour image: chest X-rays are grayscale ({appearance['colour']:.0%} of pixels coloured)")
    if appearance["spread"] < MIN_SPREAD:
        problems.append(f"nearly blank image (gray levels span {appearance['spread']:.0f} of 255)")
    if appearance["extremes"] > MAX_EXTREMES:
        problems.append(f"mostly pure black and white ({appearance['extremes']:.0%} of pixels): looks like text, "
                        "a drawing or a screenshot, not a radiograph")
    return problems


# ---------------------------------------------------------------- the fitted check


@dataclass
class Detector:
    features: Gaussian
    layout: Gaussian
    thresholds: dict  # {"features": float, "layout": float}
    info: dict  # what ood.json holds

    def check(self, features: np.ndarray, pixels: np.ndarray, appearance: dict | None = None) -> dict:
        """One image's penultimate features and model input (S, S, 1) -> {"in_distribution", "warning"?}.

        appearance (from images.load_with_appearance) adds the fixed checks; without it they are skipped.
        """
        problems = appearance_problems(appearance) if appearance is not None else []
        layout = float(self.layout.distance(layout_vectors(pixels[None]))[0])
        if layout > self.thresholds["layout"]:
            problems.append(f"its layout is unlike the training X-rays' (distance {layout:.0f} > threshold "
                            f"{self.thresholds['layout']:.0f}){self._hint(pixels)}")
        distance = float(self.features.distance(features)[0])
        if distance > self.thresholds["features"]:
            problems.append(f"unlike the training X-rays to this model (distance {distance:.0f} > threshold "
                            f"{self.thresholds['features']:.0f})")
        result = {"in_distribution": not problems}
        if problems:
            result["warning"] = "; ".join(problems)
        return result

    def _hint(self, pixels: np.ndarray) -> str:
        """What would make a refused X-ray pass, when rotating or inverting it would."""
        square = pixels[..., 0]
        variants = [(_ROTATED, np.rot90(square, 1)), (_ROTATED, np.rot90(square, -1)), (_INVERTED, 255 - square)]
        distances = self.layout.distance(layout_vectors(np.stack([image for _, image in variants])))
        best = int(np.argmin(distances))
        return variants[best][0] if distances[best] <= self.thresholds["layout"] else ""


_ROTATED = ": it looks turned on its side - rotate it upright and try again"
_INVERTED = ": it looks inverted (a negative, bone dark) - invert it and try again"


def judge(detector: Detector | None, features: np.ndarray, pixels: np.ndarray, appearance: dict | None) -> dict:
    """The check for a run's detector; runs trained before the check have none and get None."""
    if detector is None:
        return {"in_distribution": None}
    return detector.check(features, pixels, appearance)


# ---------------------------------------------------------------- features from the model


def with_features(model):
    """model -> (keras.Model returning [P(pneumonia), penultimate features], the features' layer name).

    The features are the input of the final Dense layer, traced back through Dropout
    (identity at inference): `gap` for the regularized and transfer models, `dense`
    for the baseline. Found from the graph, so any model ending in Dense works.
    """
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise UserError(f"model {model.name!r} has no final Dense layer to take features from; retrain the run")
    producers = {}
    for layer in model.layers:
        try:
            producers[id(layer.output)] = layer
        except (AttributeError, ValueError):  # shared layers have no single output
            continue
    tensor, source = dense[-1].input, producers.get(id(dense[-1].input))
    while isinstance(source, keras.layers.Dropout):
        tensor = source.input
        source = producers.get(id(tensor))
    name = source.name if source is not None else "?"
    return keras.Model(model.inputs, [model.outputs[0], tensor], name=f"{model.name}_with_features"), name


def _features_and_layouts(extractor, cache, rows):
    from . import pipeline

    ds = pipeline.make_dataset(cache, rows, np.zeros(len(rows)), batch_size=64, shuffle=False)
    features, layouts = [], []
    for x, _ in ds:
        _, batch = extractor(x, training=False)
        features.append(np.asarray(batch, dtype=np.float64).reshape(len(batch), -1))
        layouts.append(layout_vectors(np.asarray(x)))
    return np.concatenate(features), np.concatenate(layouts)


# ---------------------------------------------------------------- fit, save, load


def fit_split(run_path: Path, model, cache, train, val, *, seed: int = 0, echo=print) -> dict:
    """Fit the check on a finished model's training images, set thresholds on validation, write ood.npz/json.

    `train` and `val` are the run's split rows (their "row" in `cache`, and for `val` their "path")."""
    rng = np.random.default_rng(seed)
    train_rows = _at_most(np.asarray(train["row"]), MAX_FIT_IMAGES, rng)
    extractor, layer = with_features(model)
    train_features, train_layouts = _features_and_layouts(extractor, cache, train_rows)
    val_features, val_layouts = _features_and_layouts(extractor, cache, np.asarray(val["row"]))
    features, layout = Gaussian.fit(train_features), Gaussian.fit(train_layouts)
    distances = {"features": features.distance(val_features), "layout": layout.distance(val_layouts)}
    held_out = {"features": held_out_distances(train_features, rng), "layout": held_out_distances(train_layouts, rng)}
    thresholds = {name: threshold(distances[name], held_out[name]) for name in distances}
    passed = {name: distances[name] <= thresholds[name] for name in distances}
    picked, looks_fine = _validation_appearance(list(val["path"]), cache.image_size, rng)
    every = passed["features"][picked] & passed["layout"][picked] & looks_fine
    info = {
        "feature_layer": layer, "feature_dimensions": int(train_features.shape[1]), "layout_grid": GRID,
        "train_images": int(len(train_rows)), "validation_images": int(len(val["row"])),
        "pass_quantile": PASS_QUANTILE, "thresholds": thresholds,
        "limits": {"max_colour": MAX_COLOUR, "min_spread": MIN_SPREAD, "max_extremes": MAX_EXTREMES},
        "validation_pass": {"features": float(passed["features"].mean()), "layout": float(passed["layout"].mean()),
                            "appearance": float(looks_fine.mean()) if len(picked) else None,
                            "all": float(every.mean()) if len(picked) else None},
    }
    save(run_path, Detector(features, layout, thresholds, info))
    echo(f"out-of-distribution check: {info['validation_pass']['all'] or 0:.1%} of validation images pass "
         f"(feature distance <= {thresholds['features']:.1f}, layout distance <= {thresholds['layout']:.1f})")
    return info


def fit_run(run_path: Path, model, cache, train_rows, val_rows, val_paths, *, seed: int = 0, echo=print) -> dict:
    """fit_split() with the split's columns one by one: train.fit's call until it passes its split rows."""
    return fit_split(run_path, model, cache, {"row": train_rows}, {"row": val_rows, "path": val_paths},
                     seed=seed, echo=echo)


def _at_most(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """`rows`, or a sorted random `limit` of them: bounds the time the check adds to training."""
    return np.sort(rng.choice(rows, limit, replace=False)) if len(rows) > limit else rows


def _validation_appearance(paths: list, image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(indices picked, whether each passes the appearance limits). The limits are fixed; decoding
    validation files again only reports how many pass them."""
    picked = _at_most(np.arange(len(paths)), MAX_APPEARANCE_IMAGES, rng)
    looks_fine = np.array([not appearance_problems(_appearance(paths[i], image_size)) for i in picked], dtype=bool)
    return picked, looks_fine


def _appearance(path, image_size: int) -> dict:
    try:
        data = images.read_file_bytes(path)
        # Decoded at the model's size, as prediction decodes: a 3000 px film need not be read in full.
        return images.appearance(data, images.decode_image(data, str(path), target_size=image_size))
    except images.ImageDecodeError:
        return {"colour": 0.0, "spread": 255.0, "extremes": 0.0}  # the cache left unreadable files out already


def save(run_path: Path, detector: Detector) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, feature_mean=detector.features.mean, feature_precision=detector.features.precision.astype(np.float32),
             layout_mean=detector.layout.mean, layout_precision=detector.layout.precision.astype(np.float32))
    atomic_write_bytes(Path(run_path) / "ood.npz", buffer.getvalue())
    atomic_write_json(Path(run_path) / "ood.json", detector.info)


def load(run_path: Path) -> Detector | None:
    """The run's fitted check, or None for a run trained before it existed."""
    run_path = Path(run_path)
    if not (run_path / "ood.npz").is_file() or not (run_path / "ood.json").is_file():
        return None
    try:
        info = json.loads((run_path / "ood.json").read_text())
        with np.load(run_path / "ood.npz", allow_pickle=False) as arrays:
            features = Gaussian(arrays["feature_mean"], arrays["feature_precision"])
            layout = Gaussian(arrays["layout_mean"], arrays["layout_precision"])
        thresholds = {name: float(info["thresholds"][name]) for name in ("features", "layout")}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"run {run_path.name}: ood.npz or ood.json is unreadable ({type(error).__name__}); retrain "
                        "the run, or delete both files to predict without the out-of-distribution check") from None
    return Detector(features, layout, thresholds, info)
