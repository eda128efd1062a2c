"""Ensembles as runs: a run whose P(pneumonia) is its members' mean.

    python -m cxr_core ensemble RUN RUN [RUN ...] --name NAME     combine finished runs
    python -m cxr_core train --model regularized_cnn --ensemble 3  train 3 members on one split, then combine

The members (trained or imported runs that take the same image size) are nested in one Keras model
whose last layer, `ensemble_mean` (explain.ENSEMBLE_LAYER), averages their probabilities; it is the
run's model.keras, so evaluation, prediction and the pages load it as they load any run. Its heat map
is the members' Grad-CAM maps averaged at the image's size (explain.gradcam).

The threshold follows the members' rule (the first trained member's settings: its threshold rule and
target sensitivity) on images no member trained on, which is guaranteed thus:
- members on one patient split (identical split.csv) share its validation images: the threshold is
  chosen there and the ensemble keeps that split (its test split stays unseen by every member);
  a member that trained on its validation images too (settings.train_on_validation, the study's
  recipe) counts them as training images, so its ensemble falls to the next rule;
- members on different splits of one data folder: only images in every member's validation or test
  split, in no member's training split, choose the threshold (the ensemble's split marks them "val"
  and every other image "train"); refused when they do not hold both classes. Each member's split is
  by patient, so a child whose image is unseen by every member has all its images unseen by them;
- an imported member's training images are unknown, so nothing can be shown unseen by it: such an
  ensemble needs --threshold P (fixed) or --threshold-on DIR (a labelled folder, the site rule),
  the folder refused when it shares an image with a trained member's training split.
A member that is an imported SavedModel (callable only) cannot be nested in a saved model: refused.
"""

from __future__ import annotations

import os
import time

import pandas as pd

from . import data as data_mod
from .config import TrainSettings, UserError
from .store import RunState, RunStore, atomic_save_model, atomic_write_csv, atomic_write_json, model_file

RECIPE = "ensemble"


def members_of(run_ids: list[str], store: RunStore) -> list:
    """The member runs, checked: at least two, distinct, finished, one image size, each nestable."""
    if len(run_ids) < 2 or len(set(run_ids)) != len(run_ids):
        raise UserError("an ensemble needs at least two different runs")
    runs = [store.get(run_id) for run_id in run_ids]
    for run in runs:
        if run.state != RunState.DONE:
            raise UserError(f"run {run.run_id} is {run.state}; only finished runs join an ensemble")
        if model_file(run.path).is_dir():
            raise UserError(f"run {run.run_id} is an imported SavedModel that Keras can only call, which cannot be "
                            "nested in the ensemble's model; import it as .keras or .h5")
    sizes = {int(run.settings.get("image_size", 0)) for run in runs}
    if len(sizes) != 1:
        raise UserError(f"the runs take different image sizes ({', '.join(map(str, sorted(sizes)))} px); "
                        "an ensemble's members must take the same images")
    return runs


def _splits(trained: list, store: RunStore) -> list[pd.DataFrame]:
    folders = {os.path.realpath(run.settings.get("data_dir", "")) for run in trained}
    if len(folders) > 1:
        raise UserError("the trained members learnt from different data folders, so which images each saw cannot "
                        "be matched; combine runs trained on one folder")
    tables = []
    for run in trained:
        table = store.split(run.run_id)[["path", "label", "patient_id", "kind", "split"]]
        if run.settings.get("train_on_validation"):  # the study's recipe learns from its validation images too
            table = table.assign(split=table["split"].replace("val", "train"))
        tables.append(table)
    return tables


def unseen_split(trained: list, store: RunStore) -> pd.DataFrame:
    """The ensemble's split: the members' own when they share one, else "val" for the images in every
    member's validation or test split and "train" for every image any member trained on."""
    tables = _splits(trained, store)
    first = tables[0].sort_values("path").reset_index(drop=True)
    shared_val = first[first.split == "val"]
    if shared_val["label"].nunique() == 2 and all(first.equals(t.sort_values("path").reset_index(drop=True))
                                                 for t in tables[1:]):
        return tables[0]
    merged = tables[0].drop(columns="split")
    for i, table in enumerate(tables):
        merged = merged.merge(table[["path", "split"]].rename(columns={"split": f"split_{i}"}), on="path", how="inner")
    seen = (merged[[f"split_{i}" for i in range(len(tables))]] == "train").any(axis=1)
    merged = merged.assign(split=["train" if s else "val" for s in seen]).drop(
        columns=[f"split_{i}" for i in range(len(tables))])
    unseen = merged[merged.split == "val"]
    if unseen["label"].nunique() < 2:
        raise UserError(f"the members were trained on different splits and only {len(unseen)} images (not both "
                        "classes) are unseen by all of them, too few to choose a threshold on; combine runs of one "
                        "split, or pass --threshold P or --threshold-on DIR")
    return merged


def rule_settings(runs: list) -> TrainSettings:
    """The members' threshold rule: the first trained member's (an all-imported ensemble has none)."""
    trained = [run for run in runs if run.recipe != "imported"]
    return TrainSettings.from_dict(trained[0].settings if trained else {"threshold_rule": "fixed"})


def combined_model(models: list, image_size: int):
    """One Keras model: every member on the same input, their probabilities averaged."""
    import keras

    from .explain import ENSEMBLE_LAYER

    image = keras.Input((image_size, image_size, 1), name="image")
    outputs = []
    for i, member in enumerate(models):
        member.name = f"member_{i + 1}"  # loaded members often share a name (two regularized_cnn runs)
        outputs.append(member(image))
    return keras.Model(image, keras.layers.Average(name=ENSEMBLE_LAYER)(outputs), name="ensemble")


def new_ensemble_run(run_ids: list[str], name: str, store: RunStore, *, threshold: float | None = None,
                     threshold_on=None) -> str:
    """`ensemble RUN RUN ... --name NAME`: check, then build the ensemble run; returns its id.

    Everything that can be refused is checked before the run folder exists; a failure while
    building removes it, so nothing half-made is left."""
    from .imported import safe_name

    runs = members_of(run_ids, store)
    trained = [run for run in runs if run.recipe != "imported"]
    if len(trained) < len(runs) and threshold is None and threshold_on is None:
        raise UserError("an imported member's training images are unknown, so no image is known to be unseen by "
                        "every member: pass --threshold P (fixed) or --threshold-on DIR (a labelled folder)")
    if threshold is None and threshold_on is None:
        unseen_split(trained, store)  # refuses members with no common unseen images, before any folder exists
    rule = rule_settings(runs)
    settings = {"model": safe_name(name), "recipe": RECIPE, "members": [run.run_id for run in runs],
                "image_size": int(runs[0].settings["image_size"]), "threshold_rule": rule.threshold_rule,
                "target_sensitivity": rule.target_sensitivity, "fixed_threshold": rule.fixed_threshold}
    data_dir = trained[0].settings.get("data_dir", "") if trained else ""
    run = store.new_run(settings, data_dir, state=RunState.RUNNING)
    store.set_status(run.run_id, pid=os.getpid(), started=time.time())
    try:
        assemble(run.run_id, store, threshold=threshold, threshold_on=threshold_on)
    except BaseException:
        store.set_status(run.run_id, state=RunState.FAILED)
        store.delete(run.run_id)
        raise
    return run.run_id


def _fixed(threshold: float) -> dict:
    return {"threshold": float(threshold), "rule_name": "fixed", "rule": f"fixed at {threshold:g} (declared)"}


def _folder_threshold(model, run, trained: list, store: RunStore, folder) -> dict:
    """The site rule on a labelled folder that shares no image with any trained member's training split."""
    from .imported import labelled_threshold

    root = data_mod.resolve_root(folder, require_train=False)
    labelled = data_mod.scan_folder(root, require_train=False).manifest["path"]
    for member in trained:
        split = store.split(member.run_id)
        member_root = data_mod.resolve_root(member.settings.get("data_dir", ""))
        shared = data_mod.shared_images(labelled, [str(member_root / p) for p in split[split.split == "train"].path])
        if shared:
            raise UserError(f"--threshold-on {root} shares {len(shared)} images with the training split of run "
                            f"{member.run_id} (e.g. {shared[0]}); pass a labelled folder no member trained on")
    return labelled_threshold(model, int(run.settings["image_size"]), root, float(run.settings["target_sensitivity"]))


def _own_threshold(model, run, trained: list, store: RunStore, echo) -> dict:
    """The members' rule on their unseen images (unseen_split); stores the split and its evaluations."""
    from . import evaluate, pipeline
    from .inference import predict_rows, write_evaluation

    split = unseen_split(trained, store)
    root = data_mod.resolve_root(run.settings["data_dir"])
    atomic_write_csv(run.path / "split.csv", split)
    store.set_status(run.run_id, counts={name: int((split.split == name).sum()) for name in ("train", "val", "test")},
                     patient_overlap=data_mod.patient_overlap(split))
    part = split[split.split != "train"].assign(path=lambda f: [str(root / p) for p in f["path"]])
    cache = pipeline.build_cache(part["path"].tolist(), int(run.settings["image_size"]))
    part = pipeline.with_cache_rows(part, cache)
    prob = {name: predict_rows(model, cache, part[part.split == name]["row"]) for name in ("val", "test")}
    val = part[part.split == "val"]
    choice = evaluate.threshold_for(TrainSettings.from_dict(run.settings), val["label"].to_numpy(), prob["val"])
    atomic_write_json(run.path / "threshold.json", choice)
    echo(f"threshold {choice['threshold']:.3f} on {len(val)} images no member trained on: {choice['rule']}")
    for name in ("val", "test"):
        if (part.split == name).any():
            write_evaluation(run.path, name, part[part.split == name], prob[name], choice["threshold"], root)
    return choice


def assemble(run_id: str, store: RunStore, *, threshold: float | None = None, threshold_on=None, echo=print) -> None:
    """Build the ensemble of the run's `members` into its folder; model.keras is written last."""
    run = store.get(run_id)
    runs = members_of(run.settings["members"], store)
    trained = [member for member in runs if member.recipe != "imported"]
    model = combined_model([store.load_model(member.run_id) for member in runs], int(run.settings["image_size"]))
    if threshold is not None:
        atomic_write_json(run.path / "threshold.json", _fixed(threshold))
    elif threshold_on is not None:
        atomic_write_json(run.path / "threshold.json", _folder_threshold(model, run, trained, store, threshold_on))
    else:
        _own_threshold(model, run, trained, store, echo)
    store.set_status(run_id, synthetic=any(member.status.get("synthetic") for member in runs))
    atomic_save_model(model, run.path / "model.keras")
    store.set_status(run_id, state=RunState.DONE, finished=time.time())


def ensemble_settings(base: TrainSettings, size: int) -> dict:
    """The queued run of `train --ensemble K`: K members of `base` on base.seed's split, seeds base.seed + i."""
    if not 2 <= size <= 10:
        raise UserError(f"--ensemble {size}: give 2 to 10 members (each trains as long as one run)")
    return {"model": f"{base.model}_x{size}", "recipe": RECIPE, "ensemble_size": size, "members": [],
            "member_settings": base.to_dict(), "image_size": base.image_size, "threshold_rule": base.threshold_rule,
            "target_sensitivity": base.target_sensitivity, "fixed_threshold": base.fixed_threshold}


def submit(base: TrainSettings, size: int, data_dir, store: RunStore, *, start: bool = True) -> str:
    """Queue `train --ensemble` as one job (the Train page's ensemble option); returns its run id."""
    from . import jobs
    from .locks import queue_lock, trains_here

    data_dir = os.path.realpath(os.path.expanduser(str(data_dir)))
    settings = ensemble_settings(base, size)
    with queue_lock(store):
        if not trains_here(store):
            jobs.check_room(store)
        run = store.new_run(settings, data_dir, state=RunState.QUEUED)
    if start:
        jobs.spawn_worker(store)
    return run.run_id


def run_job(run_id: str, store: RunStore, echo=print) -> str:
    """Train the members one after another (one split, different seeds), then assemble; returns the state."""
    from dataclasses import replace

    from .train import run_job as train_member

    run = store.get(run_id)
    base = TrainSettings.from_dict(run.settings["member_settings"])
    store.set_status(run_id, state=RunState.RUNNING, pid=os.getpid(), started=time.time())
    members: list[str] = []
    try:
        for i in range(int(run.settings["ensemble_size"])):
            # split_seed keeps every member on the split of base.seed; seed varies the initial weights,
            # the augmentation draws and the batch order.
            settings = replace(base, seed=base.seed + i, split_seed=base.seed)
            members.append(store.new_run(settings.to_dict(), run.settings["data_dir"]).run_id)
            atomic_write_json(run.path / "settings.json", dict(run.settings, members=members))
            store.set_status(run_id, members=members, member=i + 1)
            echo(f"ensemble member {i + 1}/{run.settings['ensemble_size']}: run {members[-1]}")
            state = train_member(members[-1], store, echo)
            if state != RunState.DONE:
                ended = RunState.CANCELLED if state == RunState.CANCELLED else RunState.FAILED
                store.set_status(run_id, state=ended, finished=time.time(), error=f"member {members[-1]} {state}")
                return ended
        assemble(run_id, store, echo=echo)
    except Exception as error:  # marked, as train.run_job marks its runs
        message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        store.set_status(run_id, state=RunState.FAILED, finished=time.time(), error=message[:2000])
        echo(f"run {run_id} failed: {message}")
        return RunState.FAILED
    return RunState.DONE
