"""Is the class ready? What each Lesson step needs, whether it is there, and one command that queues the rest.

    python -m cxr_core lesson --check       each step: ready, training (with time left) or missing (with a fix)
    python -m cxr_core lesson --prepare     queue every run and scoring the Lesson needs that is missing

    check(data_dir, store)                  one row per step (and the reading activity), as the Lesson shows them
    prepare(data_dir, store)                queue what is missing on the background worker; says what it did

Steps 1 and 2 need the data only. Step 3 needs the study's two CNNs under the study's recipe and the
regularized CNN under ours; steps 4, 6 and 8 that run; step 5 that run scored on a second folder (a
Kaggle download's own test/ is one: its validation split is then the other side); step 7 that run
scored with the lungs occluded and with only them; step 9 the transfer models. The scorings need the
trained run, so `--prepare` queues them once the run has finished (run it again after training).
"""

from __future__ import annotations

import os

from . import data, jobs, lesson, reads, registry, run_tables
from .config import UserError
from .registry import Recipe, Weights
from .store import ACTIVE_STATES, RunState, RunStore

READY, TRAINING, MISSING = "ready", "training", "missing"
PREPARE = "python -m cxr_core lesson --prepare"
DEFAULT = registry.DEFAULT_MODEL


def needed_runs(step: int) -> list[tuple[str, str]]:
    """(model, recipe) pairs a step shows."""
    if step == 3:
        return [(m, Recipe.STUDY) for m in registry.from_scratch()] + [(DEFAULT, Recipe.IMPROVED)]
    if step in (4, 5, 6, 7, 8):
        return [(DEFAULT, Recipe.IMPROVED)]
    if step == 9:
        return [(m, Recipe.IMPROVED) for m in registry.pretrained()]
    return []


def _finished(store: RunStore, data_dir) -> dict:
    """{(model, recipe): newest finished run on data_dir}."""
    return {(model, recipe): run for recipe in Recipe
            for model, run in lesson.study_runs(store, data_dir, recipe=recipe).items()}


def _active(store: RunStore, data_dir) -> dict:
    """{(model, recipe): a queued or running run on data_dir}."""
    return {(r.model, r.recipe): r for r in store.list()
            if r.state in ACTIVE_STATES and run_tables.trained_on(r, data_dir)}


def _root(folder) -> str:
    """A data folder as scanning resolves it (through Kaggle's nesting), to compare two."""
    try:
        return str(data.resolve_root(folder, require_train=False).resolve())
    except UserError:
        return os.path.realpath(folder)


def train_command(model: str, recipe: str, data_flag: str = "") -> str:
    study = " --recipe study" if recipe == Recipe.STUDY else ""
    return f"python -m cxr_core train --model {model}{study}{data_flag}"


def _waiting_text(runs) -> str:
    parts = []
    for run in runs:
        if run.state == RunState.RUNNING:
            progress = run_tables.training_progress(run)
            parts.append(f"{run.model} ({run.recipe}) {progress['text']}, time left {progress['remaining']}")
        else:
            parts.append(f"{run.model} ({run.recipe}) queued")
    return "; ".join(parts)


def _scoring_state(step: int, run, data_flag: str) -> tuple[str, str, str | None]:
    """(state, detail, command) of step 5 or 7 once the regularized CNN has finished."""
    if step == 5:
        rows = lesson.shift_rows(run)
        if len(rows) >= 2:
            return READY, f"{len(rows)} rows: " + ", ".join(rows["scored on"]), None
        return (MISSING, "the run is scored on one split only; score it on the official test folder",
                f"python -m cxr_core evaluate {run.run_id} --data FOLDER_WITH_THE_OFFICIAL_TEST")
    _, missing = lesson.occlusion_rows(run)
    if not missing:
        return READY, "scored with the lungs blacked out and with only the lungs", None
    return (MISSING, f"not yet scored with occlusion: {', '.join(missing)}",
            " && ".join(f"python -m cxr_core evaluate {run.run_id} --occlude {how}" for how in missing))


def _step_row(step: int, finished: dict, active: dict, data_flag: str) -> dict:
    needs = needed_runs(step)
    missing = [pair for pair in needs if pair not in finished]
    row = {"step": step, "title": lesson.STEPS[step - 1].title, "state": READY, "detail": "needs the data only",
           "command": None}
    if needs and not missing:
        row["detail"] = "trained: " + ", ".join(f"{m} ({r})" for m, r in needs)
    waiting = [active[pair] for pair in missing if pair in active]
    if waiting:
        row.update(state=TRAINING, detail=_waiting_text(waiting))
    elif missing:
        row.update(state=MISSING, detail="not trained: " + ", ".join(f"{m} ({r})" for m, r in missing),
                   command=" && ".join(train_command(m, r, data_flag) for m, r in missing))
    if step in (5, 7) and not missing:
        state, detail, command = _scoring_state(step, finished[(DEFAULT, Recipe.IMPROVED)], data_flag)
        row.update(state=state, detail=detail, command=command)
    if step == 9 and row["state"] == READY:
        unused = [m for m, r in needs if finished[(m, r)].settings.get("weights") != Weights.IMAGENET]
        if unused:
            row["detail"] += f" (without ImageNet weights: {', '.join(unused)}; no test of transfer)"
    return row


def check(data_dir, store: RunStore, data_flag: str = "") -> list[dict]:
    """Each Lesson step (and the reading activity): state, what is there or missing, and the command that
    fixes it. `data_flag` is appended to the commands (" --data DIR" when the data is not the default)."""
    finished, active = _finished(store, data_dir), _active(store, data_dir)
    rows = [_step_row(step, finished, active, data_flag) for step in range(1, len(lesson.STEPS) + 1)]
    root = _root(data_dir)
    open_sets = [s for s in reads.list_sets(store) if s["state"] == reads.OPEN and _root(s["data_dir"]) == root]
    rows.append({"step": "read", "title": "The class reads the X-rays", "state": READY if open_sets else MISSING,
                 "detail": (f"open reading set {open_sets[0]['id']} ({len(open_sets[0]['images'])} images)" if open_sets
                            else "no open reading set on this data set"),
                 "command": None if open_sets else f"python -m cxr_core reads new --images 20 --seed 7{data_flag}"})
    for row in rows:
        if row["state"] == MISSING and row["step"] != "read" and row["command"] and "evaluate" not in row["command"]:
            row["command"] = f"{PREPARE}{data_flag}   (or: {row['command']})"
    return rows


def prepare(data_dir, store: RunStore, *, steps=None, overrides: dict | None = None, weights: str | None = None,
            start: bool = True) -> dict:
    """Queue every run the `steps` (default: all) need that is neither finished nor waiting, and the
    occluded scorings of a finished regularized CNN; start the worker. `overrides` (epochs, image_size)
    make a quick try-out; the Lesson's figures mean what they say only with the defaults.

    Returns {"queued": [run ids], "scorings": [request ids], "notes": [sentences]}."""
    steps = list(steps or range(1, len(lesson.STEPS) + 1))
    finished, active = _finished(store, data_dir), _active(store, data_dir)
    todo = list(dict.fromkeys(pair for step in steps for pair in needed_runs(step)
                              if pair not in finished and pair not in active))
    jobs.check_room(store, len(todo))  # the whole lineup or none of it
    queued, notes = [], []
    for model, recipe in todo:
        settings = registry.default_settings(model, recipe)
        for key, value in (overrides or {}).items():
            setattr(settings, key, value)
        if weights and registry.get(model).pretrained:
            settings.weights = weights
        queued.append(jobs.submit(settings, data_dir, store, start=False))
    transfer = [m for m, _ in todo if registry.get(m).pretrained]
    if transfer and (weights or Weights.IMAGENET) == Weights.IMAGENET:
        notes.append(f"{', '.join(transfer)} download ImageNet weights once (needs a network); offline, prepare "
                     "with --weights none, and step 9 then says nothing about transfer")
    scorings = []
    ours = finished.get((DEFAULT, Recipe.IMPROVED))
    if ours is not None and 7 in steps:
        for how in lesson.occlusion_rows(ours)[1]:
            scorings.append(jobs.submit_evaluation(ours.run_id, ours.settings["data_dir"], store, occlusion=how,
                                                   start=False))
    elif 7 in steps:
        notes.append(f"step 7 scores the trained {DEFAULT}: run `{PREPARE}` again once it has finished")
    if (queued or scorings) and start:
        jobs.spawn_worker(store)
    return {"queued": queued, "scorings": scorings, "notes": notes}
