"""The numbers of a reading set (cxr_core.reads): each reader beside the model on the same images.

A reader answers NORMAL or PNEUMONIA with a confidence from 1 to 5. Their call gives one ROC point;
their confidences give a curve, from one score per image on a ten-step scale (reader_scores): a sure
NORMAL is 1, an unsure NORMAL 5, an unsure PNEUMONIA 6, a sure PNEUMONIA 10. The reader's own call is
that score at 5.5, so the point lies on the curve, as the model's operating point lies on its curve.

    reader_metrics(truth, answers, confidences)   confusion matrix, sensitivity, specificity, ROC point, curve, AUC
    majority_vote(truth, readers)                 the class as one reader
    model_side(reading_set, store, run_id)        the run's stored predictions on the set's images
    report(reading_set, store, run_id)            everything the Read page and `reads SET --json` show
    answer_rows(report)                           one row per answer, for `reads SET --csv`
"""

from __future__ import annotations

import copy
import functools
import os

import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve

from . import evaluate, reads
from .config import CLASSES
from .store import FINISHED, RunStore, evaluation_files

# A reader's call is PNEUMONIA exactly when their score is above this (scores run 1..10).
CALL_AT = 5.5


def reader_scores(answers, confidences) -> np.ndarray:
    """One score per image: 6..10 for PNEUMONIA (surer is higher), 5..1 for NORMAL (surer is lower)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    return np.where(np.asarray(answers) == CLASSES[1], 5.0 + confidences, 6.0 - confidences)


def curve_metrics(truth, scores, threshold: float) -> dict:
    """Confusion matrix, sensitivity, specificity and ROC point at `threshold`, and the ROC curve and AUC
    of `scores` (sklearn's roc_curve; no curve when the images hold one class only)."""
    y, scores = np.asarray(truth, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    at = evaluate.metrics_at_threshold(y, scores, threshold)
    result = {"n": int(y.size), "confusion_matrix": at["confusion_matrix"], "sensitivity": at["sensitivity"],
              "specificity": at["specificity"], "accuracy": at["accuracy"], "roc": None, "auc": None}
    if at["sensitivity"] is not None and at["specificity"] is not None:
        result["roc_point"] = {"fpr": 1.0 - at["specificity"], "tpr": at["sensitivity"]}
    if 0 < y.sum() < y.size:
        fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)  # keeps the vertex of the call
        result["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
        # The area under this very curve: roc_auc_score's figure without checking the inputs a second time
        # (a class view of 300 readers computes it 300 times).
        result["auc"] = float(auc(fpr, tpr))
    return result


def reader_metrics(truth, answers, confidences) -> dict:
    """One reader's numbers on a set (truth: 0/1 per image; answers: NORMAL/PNEUMONIA; confidences 1-5)."""
    return copy.deepcopy(_reader_metrics(tuple(int(t) for t in truth), tuple(answers), tuple(int(c) for c in confidences)))


@functools.lru_cache(maxsize=4096)
def _reader_metrics(truth: tuple, answers: tuple, confidences: tuple) -> dict:
    # Once per reader: a class view of 300 readers recomputes only the one whose answers just arrived
    # (scikit-learn's input checks cost milliseconds a call, a second for 300 readers).
    return curve_metrics(truth, reader_scores(answers, confidences), CALL_AT)


def majority_vote(truth, answer_lists, confidence_lists) -> dict | None:
    """The class as one reader: PNEUMONIA where most readers said so. A tie goes to the readers' mean
    score, and an exact tie to PNEUMONIA (a missed pneumonia costs more than a false alarm)."""
    if not answer_lists:
        return None
    votes = np.mean([np.asarray(a) == CLASSES[1] for a in answer_lists], axis=0)
    mean_score = np.mean([reader_scores(a, c) for a, c in zip(answer_lists, confidence_lists)], axis=0)
    called = np.where(votes == 0.5, mean_score >= CALL_AT, votes > 0.5)
    result = curve_metrics(truth, called.astype(float), 0.5)
    result.update(roc=None, auc=None, readers=len(answer_lists))  # one call per image: a point, not a curve
    return result


def _set_paths(reading_set: dict) -> list[str]:
    root = reading_set["data_dir"]
    return [os.path.realpath(os.path.join(root, image["path"])) for image in reading_set["images"]]


def _predictions_on(run, wanted: list[str]) -> tuple[pd.DataFrame, dict, str] | None:
    """(predictions in the set's order, their evaluation, source) of the first plain test evaluation of
    `run` that scored every one of the `wanted` files; None when none did."""
    for source in run.evaluation_sources("test"):
        evaluation = run.evaluation("test", source)
        if not evaluation or "+" in source:
            continue  # occluded or site-calibrated scorings ("+" in the key) are other experiments
        path = evaluation_files(run.path, "test", source)[1]
        try:
            table = pd.read_csv(path, usecols=["path", "label", "probability"])
        except (OSError, ValueError):
            continue
        root = evaluation.get("data_dir") or run.settings.get("data_dir", "")
        table.index = [os.path.realpath(os.path.join(root, p)) for p in table["path"]]
        table = table[~table.index.duplicated()]
        if set(wanted) <= set(table.index):
            return table.loc[wanted].reset_index(drop=True), evaluation, source
    return None


def model_side(reading_set: dict, store: RunStore, run_id: str | None = None) -> dict | None:
    """The model on the set's images: `run_id`'s stored test predictions, else the set's run's, else the
    newest finished run whose stored predictions cover every image. None when no run's do."""
    wanted = _set_paths(reading_set)
    if run_id:
        candidates = [store.get(run_id)]  # asked for by name: an unknown run is the person's to fix
    else:
        candidates = store.finished()
        ordered = [r for r in candidates if r.run_id == reading_set.get("run")]  # the set's run, while it exists
        candidates = ordered + [r for r in candidates if r not in ordered]
    for run in candidates:
        if run.state != FINISHED:
            continue
        found = _predictions_on(run, wanted)
        if found is None:
            continue
        table, evaluation, source = found
        threshold = float(evaluation["threshold"])
        truth = [image["truth"] for image in reading_set["images"]]
        metrics = curve_metrics(truth, table["probability"].to_numpy(), threshold)
        return {"run": run.run_id, "model": run.model, "source": source, "threshold": threshold,
                "synthetic": bool(run.status.get("synthetic")), **metrics,
                "probabilities": [float(p) for p in table["probability"]]}
    return None


def specificity_at(model: dict, sensitivity: float) -> float | None:
    """The model's best specificity at a sensitivity of at least `sensitivity`, read off its ROC curve."""
    if not model or not model.get("roc") or sensitivity is None:
        return None
    fpr, tpr = np.asarray(model["roc"]["fpr"]), np.asarray(model["roc"]["tpr"])
    reach = tpr >= sensitivity - 1e-12
    return float(1.0 - fpr[reach].min()) if reach.any() else None


def findings(rows: list[dict], vote: dict | None, model: dict | None) -> list[str]:
    """One sentence per finding, as the class view shows them."""
    if not rows:
        return ["No reader has submitted yet."]
    if model is None:
        return [f"{len(rows)} readers submitted. No finished run has stored predictions on these images, so "
                "there is no model to compare with: train one on this data set (or score a run on this folder)."]
    judged = [(r, specificity_at(model, r["sensitivity"])) for r in rows if r["specificity"] is not None]
    judged = [(r, m) for r, m in judged if m is not None]
    beat = sum(r["specificity"] > m + 1e-12 for r, m in judged)
    said = [f"{beat} of {len(judged)} readers beat the model's specificity at their own sensitivity."]
    at_vote = specificity_at(model, vote["sensitivity"]) if vote else None
    if at_vote is not None and vote["specificity"] is not None:
        said.append(f"The class's majority vote (sensitivity {vote['sensitivity']:.2f}, specificity "
                    f"{vote['specificity']:.2f}) is {vote['specificity'] - at_vote:+.2f} in specificity from the model "
                    f"at the same sensitivity ({at_vote:.2f}).")
    return said


def report(reading_set: dict, store: RunStore, run_id: str | None = None, warn=None) -> dict:
    """The set, every reader's numbers and answers, the majority vote, the model and the findings."""
    truth = [image["truth"] for image in reading_set["images"]]
    rows = []
    for number, record in enumerate(reads.readers(reading_set, store, warn=warn), 1):
        answers = [a["answer"] for a in record["answers"]]
        confidences = [a["confidence"] for a in record["answers"]]
        rows.append({"name": record["name"] or f"reader {number}", "nickname": bool(record["name"]),
                     "id": record["id"], "submitted": record["submitted"],
                     **reader_metrics(truth, answers, confidences),
                     "answers": [{"image": image["path"], "truth": CLASSES[image["truth"]], **answer}
                                 for image, answer in zip(reading_set["images"], record["answers"])]})
    vote = majority_vote(truth, [[a["answer"] for a in r["answers"]] for r in rows],
                         [[a["confidence"] for a in r["answers"]] for r in rows])
    model = model_side(reading_set, store, run_id)
    shown = {k: v for k, v in reading_set.items() if k != "images"}
    return {"set": {**shown, "images": [{"number": i, "path": image["path"], "truth": CLASSES[image["truth"]]}
                                        for i, image in enumerate(reading_set["images"], 1)]},
            "readers": rows, "majority_vote": vote, "model": model, "findings": findings(rows, vote, model)}


def answer_rows(result: dict) -> pd.DataFrame:
    """One row per reader and image, with the reader's sensitivity and specificity: `reads SET --csv`."""
    rows = [{"reader": reader["name"], "reader_sensitivity": reader["sensitivity"],
             "reader_specificity": reader["specificity"], "image_number": i, **answer}
            for reader in result["readers"] for i, answer in enumerate(reader["answers"], 1)]
    return pd.DataFrame(rows, columns=["reader", "reader_sensitivity", "reader_specificity", "image_number", "image",
                                       "truth", "answer", "confidence"])

