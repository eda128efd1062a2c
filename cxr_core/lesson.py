"""The Lesson: a guided walk through the study, one step at a time, for a class.

Each step has a short explanation for students, a question to discuss, and the
numbers behind its figure, computed here from this data set and these runs (the
Lesson page only lays them out; `python -m cxr_core lesson` prints them):

    STEPS                                   titles, explanations and questions, in order
    leakage_experiment(manifest)            how much an image-level split overstates accuracy, measured
    study_runs(store, data_dir)             the newest finished run of each model on this data set
    shift_rows(run) / occlusion_rows(run)   a run's per-folder and occluded evaluations
    transfer_rows(store, data_dir)          transfer models against the CNNs, with their weights
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import registry
from .config import HEADLINE_METRICS
from .store import ACTIVE_STATES, OWN, RunState, split_source


@dataclass(frozen=True)
class Step:
    title: str
    explanation: str
    question: str


STEPS = (
    Step("Census: who is in the data set",
         "Count before you train. Pediatric chest X-rays from Guangzhou: about three pneumonia films for every "
         "normal one. A model that never looks at the image and always answers PNEUMONIA already scores the "
         "share of pneumonia as its accuracy. That is the bar, not zero.",
         "If a paper reports 80% accuracy on this data set, is that good? What would you ask first?"),
    Step("The validation trap, and patients",
         "The official validation folder holds 16 images: one image more or less moves its accuracy by six "
         "points, too few to choose a threshold or stop training on. So validation is carved from train. And "
         "many children have several X-rays: split by image and the same child lands on both sides, so the test "
         "rewards remembering a child. Below, a nearest-neighbour classifier on tiny images is scored under "
         "both splits of this data set, to measure whether, and by how much, that flatters.",
         "Is the measured gap what you expected? Would a large CNN, which can memorise a child's ribs, "
         "gain more from the leak than this nearest-neighbour classifier?"),
    Step("Baseline against regularized",
         "The seed study's two CNNs, scored on the same held-out images. On the official test split the "
         "baseline reached 72% accuracy with a sensitivity of 0.99 and a specificity of 0.27: it called almost "
         "everyone PNEUMONIA. On an imbalanced set accuracy hides that; the confusion matrix does not.",
         "Which would you rather deploy: 0.99 sensitivity with 0.27 specificity, or 0.90 with 0.80? For whom?"),
    Step("Sensitivity against specificity",
         "A model gives a probability; the threshold turns it into a call. Move it and watch the two kinds of "
         "error trade places: a missed pneumonia (a sick child sent home) against a false alarm (a healthy "
         "child given antibiotics, a second X-ray, worry).",
         "How many false alarms would you accept to catch one more pneumonia? Who should decide?"),
    Step("Distribution shift",
         "A split carved from the training folder comes from the same hospital, machines and period as the "
         "training images. Another labelled folder, such as the official test split, does not quite. The same "
         "run on both shows how far a model falls when the images change under it.",
         "What differs between two hospitals' X-rays that a network could have latched onto?"),
    Step("Prevalence and calibration",
         "Sensitivity and specificity belong to the model; PPV (how often a PNEUMONIA call is right) and NPV "
         "belong to the model and the population. In a clinic where 5% of children have pneumonia most calls "
         "are false alarms. And is P(pneumonia) = 0.8 right 80% of the time? The reliability diagram says; "
         "temperature scaling, fitted on validation, softens an over-confident model without changing its ranking.",
         "A parent asks: the computer says 90%, does my child have pneumonia? What do you answer?"),
    Step("Shortcuts",
         "Black out the lung fields (a fixed central box, as Maguolo and Nanni did with COVID-19 X-rays) and "
         "score the model again; then keep only the lung fields. A model that still tells the classes apart "
         "without the lungs has learnt something other than lungs: markers, positioning, the hospital.",
         "If the no-lungs score is well above chance, what could the model be using?"),
    Step("Is the heat map real?",
         "Grad-CAM shows where the evidence was. Adebayo et al. (2018) asked a simple question of such maps: "
         "does the map change when the model's weights are replaced by random ones? If a random model gives "
         "the same picture, the map shows the image's edges, not what the model learnt.",
         "What would you conclude if the two maps looked alike?"),
    Step("Transfer against from scratch",
         "MobileNetV2 and DenseNet121 start from ImageNet weights: features learnt on photographs of dogs and "
         "cars, reused for X-rays. Compare them with the CNNs trained from scratch. Where the weights could not "
         "be downloaded the runs started from random weights instead: that is no test of transfer at all.",
         "Why might features learnt from photographs help with X-rays, and when might they not?"),
)


def leakage_experiment(manifest: pd.DataFrame, *, image_size: int = 32, repeats: int = 5,
                       test_fraction: float = 0.3, seed: int = 0) -> dict:
    """Accuracy of a 1-nearest-neighbour classifier on downsampled images, under an image-level and a
    patient-level split of the same pool (train and val folders), `repeats` times each.

    1-NN is chosen on purpose: it memorises, so it profits most from seeing the same child on both sides,
    and it costs seconds instead of a training run. The gap between the two splits is the overstatement.
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    from . import pipeline

    pool = manifest[manifest["source_split"].isin(["train", "val"])].reset_index(drop=True)
    cache = pipeline.build_cache(pool["path"].tolist(), image_size)
    pool = pipeline.with_cache_rows(pool, cache)
    x = cache.read(pool["row"].to_numpy()).reshape(len(pool), -1).astype(np.float32) / 255.0
    y, groups = pool["label"].to_numpy(), pool["patient_id"].to_numpy()
    rows = []
    for repeat in range(repeats):
        rng_seed = seed + repeat
        train_i, test_i = train_test_split(np.arange(len(pool)), test_size=test_fraction, stratify=y,
                                           random_state=rng_seed)
        folds = StratifiedGroupKFold(n_splits=max(2, round(1 / test_fraction)), shuffle=True, random_state=rng_seed)
        p_train, p_test = next(folds.split(x, y, groups))
        for name, (a, b) in {"image": (train_i, test_i), "patient": (p_train, p_test)}.items():
            knn = KNeighborsClassifier(n_neighbors=1).fit(x[a], y[a])
            leaked = len(set(groups[a]) & set(groups[b]))
            rows.append({"split": name, "repeat": repeat, "accuracy": float((knn.predict(x[b]) == y[b]).mean()),
                         "test_images": int(len(b)), "children_on_both_sides": leaked})
    table = pd.DataFrame(rows)
    means = table.groupby("split")[["accuracy", "children_on_both_sides"]].mean()
    return {
        "method": f"1-nearest-neighbour on {image_size}x{image_size} pixel images, {repeats} random "
                  f"{test_fraction:.0%} test splits of the train and val folders ({len(pool)} images)",
        "image_level_accuracy": float(means.loc["image", "accuracy"]),
        "patient_level_accuracy": float(means.loc["patient", "accuracy"]),
        "overstatement": float(means.loc["image", "accuracy"] - means.loc["patient", "accuracy"]),
        "children_on_both_sides": float(means.loc["image", "children_on_both_sides"]),
        "runs": rows,
    }


def _same_folder(a, b) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, TypeError):
        return False


def study_runs(store, data_dir, recipe: str | None = "improved") -> dict:
    """{model: the newest finished run of it trained on `data_dir` with `recipe` (any recipe when None)},
    in the registry's order."""
    newest = {}
    for run in store.finished():  # newest first
        if _same_folder(run.settings.get("data_dir"), data_dir) and recipe in (None, run.recipe):
            newest.setdefault(run.model, run)
    return {model: newest[model] for model in registry.names() if model in newest}


def picker_runs(store, data_dir) -> dict:
    """What a step's run picker offers: study_runs (ours), then the newest ensemble and imported run of
    each name on `data_dir` that has figures on its own test split (the steps read them)."""
    runs = study_runs(store, data_dir)
    for run in store.finished():  # newest first
        if (run.recipe in ("ensemble", "imported") and _same_folder(run.settings.get("data_dir"), data_dir)
                and run.evaluation("test")):
            runs.setdefault(run.model, run)
    return runs


def active_runs(store, data_dir) -> dict:
    """{model: a queued or running run on `data_dir`}: what the lesson is already waiting for."""
    return {run.model: run for run in store.list()
            if run.state in ACTIVE_STATES and _same_folder(run.settings.get("data_dir"), data_dir)}


_COLUMNS = ("n", "threshold", *HEADLINE_METRICS)
# Step 5's in-distribution side when the own test split is the official one.
VALIDATION_ROW = "own validation split (carved from train: same hospital and days as training)"


def _row(label: str, evaluation: dict) -> dict:
    return {"scored on": label, **{k: evaluation.get(k) for k in _COLUMNS}}


def shift_rows(run) -> pd.DataFrame:
    """One row per plain (not occluded) test evaluation of `run`: its own split first, then each folder.

    When the run's own test split is its folder's official test/ (a Kaggle download), its validation
    split (carved from train: the training images' hospital and days) is a row too: the two sides of
    the shift without a second folder."""
    from .run_tables import evaluation_label, own_test_is_official

    rows = [_row(evaluation_label(("test", source), [run]), run.evaluation("test", source))
            for source in run.evaluation_sources("test") if split_source(source)[1] is None]
    validation = run.evaluation("val") if own_test_is_official(run) else None
    if validation:
        rows.append(_row(VALIDATION_ROW, validation))
    return pd.DataFrame(rows, columns=["scored on", *_COLUMNS])


def occlusion_rows(run) -> tuple[pd.DataFrame, list[str]]:
    """(rows for the own test split plain, without the lungs, with only the lungs; the occlusions not yet scored)."""
    from .images import OCCLUSIONS
    from .run_tables import evaluation_label
    from .store import occluded_source

    rows, missing = [], []
    for occlusion in (None, *OCCLUSIONS):
        source = occluded_source(OWN, occlusion)
        evaluation = run.evaluation("test", source)
        if evaluation is None:
            missing.append(occlusion)
        else:
            rows.append(_row(evaluation_label(("test", source), [run]), evaluation))
    return pd.DataFrame(rows, columns=["scored on", *_COLUMNS]), [m for m in missing if m]


def transfer_rows(store, data_dir) -> pd.DataFrame:
    """The newest run of each model on `data_dir` (failed transfer runs too: their error is the lesson),
    with where its weights started and its own test metrics."""
    rows = []
    seen = set()
    for run in store.list():
        if run.model in seen or not _same_folder(run.settings.get("data_dir"), data_dir):
            continue
        if run.state not in (RunState.DONE, RunState.FAILED):
            continue
        seen.add(run.model)
        weights = run.settings.get("weights", "none")
        start = ("random (trained from scratch)" if run.model in registry.from_scratch() else
                 "ImageNet" if weights == "imagenet" else
                 "random: ImageNet weights NOT used (weights none)" if weights == "none" else f"file {weights}")
        evaluation = run.evaluation("test") or {}
        rows.append({"model": run.model, "run": run.run_id, "state": run.state, "weights": start,
                     **{k: evaluation.get(k) for k in _COLUMNS[1:]}, "note": run.error or ""})
    order = {m: i for i, m in enumerate(registry.names())}
    return pd.DataFrame(sorted(rows, key=lambda r: order.get(r["model"], 99)),
                        columns=["model", "run", "state", "weights", *_COLUMNS[1:], "note"])


def prevalence_rows(sensitivity: float, specificity: float, prevalences=(0.05, 0.25, 0.5, 0.75)) -> pd.DataFrame:
    """PPV and NPV of one operating point at several prevalences."""
    from .calibration import predictive_values

    return pd.DataFrame([{"prevalence": p, **{k: v for k, v in predictive_values(sensitivity, specificity, p).items()
                                               if k in ("ppv", "npv")}} for p in prevalences])


def sanity_maps(model, random_model, pixels: np.ndarray, label: str) -> dict:
    """Grad-CAM of the trained model and of its random-weight copy (explain.randomized_copy) for one
    image, both as evidence for `label`, and their Spearman similarity. Loads TensorFlow."""
    from . import explain
    from .config import CLASSES

    trained = explain.gradcam(model, pixels, class_index=CLASSES.index(label))
    randomized = explain.gradcam(random_model, pixels, class_index=CLASSES.index(label))
    return {"trained": trained, "randomized": randomized, "similarity": explain.map_similarity(trained, randomized)}


def validation_and_patients(scan, split: pd.DataFrame) -> dict:
    """Step 2's numbers: the official val folder's size, the children a random image-level split puts on
    both sides, the leakage check of the patient-level `split`, and the measured overstatement."""
    from . import data
    from .explore import naive_split_leakage

    return {"official_val_images": int((scan.manifest["source_split"] == "val").sum()),
            "naive_split_children_on_both_sides": naive_split_leakage(scan.manifest),
            "leakage_check": data.leakage_report(split),
            "measured": leakage_experiment(scan.manifest)}


def summary(scan, split: pd.DataFrame, store, *, prevalence: float = 0.05) -> dict:
    """Every step's numbers that need no TensorFlow, keyed by step: what `python -m cxr_core lesson` prints.

    Step 8 (heat maps) is `predict RUN FILE --heatmap OUT.png [--randomized]`.
    """
    from . import calibration
    from .config import UserError
    from .explore import class_balance

    runs = study_runs(store, scan.root)
    study = study_runs(store, scan.root, recipe="study")
    records = lambda frame: frame.to_dict(orient="records")  # noqa: E731
    step_2 = validation_and_patients(scan, split)
    step_2["measured"] = {k: v for k, v in step_2["measured"].items() if k != "runs"}  # each repeat: the page's chart
    steps = {
        "1_census": records(class_balance(split)),
        "2_validation_and_patients": step_2,
        "3_baseline_vs_regularized": {
            "study_recipe": {m: (study[m].evaluation("test") or {}).get("confusion_matrix")
                             for m in registry.from_scratch() if m in study},
            "ours": {m: (runs[m].evaluation("test") or {}).get("confusion_matrix")
                     for m in registry.from_scratch() if m in runs}},
    }
    for model, run in runs.items():
        evaluation = run.evaluation("test") or {}
        entry = {"run": run.run_id, "synthetic": bool(run.status.get("synthetic")),
                 "threshold": evaluation.get("threshold"), "shift": records(shift_rows(run)),
                 "occlusion": records(occlusion_rows(run)[0])}
        if evaluation.get("sensitivity") is not None and evaluation.get("specificity") is not None:
            entry["at_prevalence"] = calibration.predictive_values(evaluation["sensitivity"],
                                                                   evaluation["specificity"], prevalence)
        try:
            entry["calibration"] = {k: v for k, v in calibration.for_run(run.run_id, store).items()
                                    if k in ("ece", "brier", "temperature", "ece_scaled", "brier_scaled")}
        except UserError as error:
            entry["calibration"] = {"error": str(error)}
        steps.setdefault("4_to_7_per_run", {})[model] = entry
    steps["9_transfer_vs_scratch"] = records(transfer_rows(store, scan.root))
    return {"data": str(scan.root), "synthetic": bool(scan.synthetic), "steps": steps}
