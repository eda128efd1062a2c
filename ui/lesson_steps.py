"""The Lesson page's steps, one layout function each (numbers from cxr_core.lesson and friends).

Each function draws one step's live figure or table for the active data set and
its runs; when something it needs is missing it offers one button that queues
exactly that on the background worker, and shows the progress in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from cxr_core import (
    calibration,
    data,
    evaluate,
    explore,
    figures,
    heatmap,
    images,
    jobs,
    lesson,
    lesson_prep,
    reference,
    registry,
    run_tables,
)
from cxr_core.config import HEADLINE_METRICS, UserError
from cxr_core.registry import Recipe
from cxr_core.store import ACTIVE_STATES, RunStore
from ui import data_sets, teacher
from ui import runs as ui_runs

WAITING = "_lesson_waiting"


@dataclass
class Context:
    scan: object
    split: pd.DataFrame
    store: RunStore
    runs: dict  # model -> newest finished run on this data set (lesson.picker_runs)


@st.cache_data(max_entries=8, show_spinner="Measuring: a nearest-neighbour classifier under both splits...")
def _validation_and_patients(root: str) -> dict:
    return lesson.validation_and_patients(*data_sets.load_split(root))


def queue_training(ctx: Context, models, label: str, weights: str | None = None,
                   recipe: str = Recipe.IMPROVED) -> None:
    """A button that queues training runs of `models` under `recipe` on this data set."""
    waiting = lesson.active_runs(ctx.store, ctx.scan.root)
    todo = [m for m in models if m not in waiting]
    may_queue = bool(todo) and teacher.allowed("queue training runs")
    if todo and st.button(label, icon=":material/playlist_add:", key=f"queue_{recipe}_{'_'.join(todo)}",
                          disabled=not may_queue) and may_queue:
        try:
            jobs.queue_lineup(todo, ctx.scan.root, ctx.store, recipe=recipe, weights=weights)
            st.session_state[WAITING] = True
        except UserError as error:
            st.error(str(error))
    if waiting or st.session_state.get(WAITING):
        progress(str(ctx.store.root), str(ctx.scan.root))


def queue_evaluation(ctx: Context, run, label: str, folder=None, occlusions=(None,)) -> None:
    """A button that queues scoring `run` (on its own split, or on `folder`), once per occlusion."""
    may_queue = teacher.allowed("queue scorings")
    if st.button(label, icon=":material/playlist_add:", key=f"evaluate_{run.run_id}_{label}",
                 disabled=not may_queue) and may_queue:
        try:
            for occlusion in occlusions:
                jobs.submit_evaluation(run.run_id, folder or run.settings["data_dir"], ctx.store, occlusion=occlusion)
            st.session_state[WAITING] = True
        except UserError as error:
            st.error(str(error))
    if st.session_state.get(WAITING):
        progress(str(ctx.store.root), str(ctx.scan.root))


@st.fragment(run_every=3)
def progress(root: str, data_dir: str) -> None:
    """What the worker is doing for this lesson; the whole page reruns when it is done."""
    store = RunStore(root)
    training = lesson.active_runs(store, data_dir)
    scoring = [r for r in jobs.evaluation_requests(store) if r["state"] in ACTIVE_STATES]
    for model, run in training.items():
        status = run_tables.training_progress(run)
        st.progress(status["fraction"], text=f"Training {model} ({run.state}): epoch {status['epoch']} of {status['epochs']}")
    for request in scoring:
        what = f", {request['occlusion']} occluded" if request.get("occlusion") else ""
        st.info(f"Scoring {request['run']}{what} ({request['state']}).", icon=":material/hourglass_top:")
    jobs.keep_queue_moving(store)
    if not training and not scoring and st.session_state.get(WAITING):
        st.session_state[WAITING] = False
        st.rerun(scope="app")


def pick_run(ctx: Context, key: str, prefer: str = registry.DEFAULT_MODEL):
    """A chooser among the lesson's runs (the regularized CNN first); with none, a button to train one."""
    if not ctx.runs:
        st.info("This step needs a trained model, and none has finished on this data set yet.")
        queue_training(ctx, [prefer], f"Train {prefer} (our recipe)")
        return None
    models = sorted(ctx.runs, key=lambda m: m != prefer)
    model = st.selectbox("Run", models, key=key, format_func=lambda m: run_tables.run_label(ctx.runs[m]))
    return ctx.runs[model]


def metrics_table(table: pd.DataFrame) -> None:
    st.dataframe(table, hide_index=True, placeholder="–", column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in HEADLINE_METRICS})


@st.cache_data(ttl=15, max_entries=8, show_spinner=False)
def _readiness(root: str, data_dir: str) -> list[dict]:
    return lesson_prep.check(data_dir, RunStore(root))


def readiness(ctx: Context) -> None:
    """For the teacher, on the Lesson's first screen: `lesson --check`, and one button for `lesson --prepare`."""
    if not teacher.may_act():
        return
    rows = _readiness(str(ctx.store.root), str(ctx.scan.root))
    ready = sum(row["state"] == lesson_prep.READY for row in rows)
    with st.expander(f"Is the class ready? {ready} of {len(rows)} parts are (for the teacher)", icon=":material/checklist:"):
        st.dataframe(pd.DataFrame(rows).astype({"step": str}), hide_index=True, column_config={"command": "what fixes it"})
        st.caption("The same as `python -m cxr_core lesson --check`. Training runs one at a time in the background; "
                   "the whole lineup takes hours on a laptop: start it the day before.")
        if ready < len(rows) and st.button("Queue everything missing", icon=":material/playlist_add:", key="lesson_prepare"):
            try:
                done = lesson_prep.prepare(ctx.scan.root, ctx.store)
                st.success(f"Queued {len(done['queued'])} runs and {len(done['scorings'])} scorings.")
                for note in done["notes"]:
                    st.info(note)
                _readiness.clear()
            except UserError as error:
                st.error(str(error))


def census(ctx: Context) -> None:
    balance = explore.class_balance(ctx.split)
    overall = balance[balance["split"] == "all"].iloc[0]
    cols = st.columns(3)
    cols[0].metric("Images", f"{int(overall['images']):,}")
    cols[1].metric("PNEUMONIA : NORMAL", f"{overall['PNEUMONIA'] / max(overall['NORMAL'], 1):.1f} : 1")
    cols[2].metric("Accuracy of always answering PNEUMONIA", f"{overall['always_pneumonia_accuracy']:.1%}")
    st.plotly_chart(figures.counts_figure(data.split_summary(ctx.split)), key="lesson_counts")
    st.dataframe(balance, hide_index=True)


def validation_trap(ctx: Context) -> None:
    numbers = _validation_and_patients(str(ctx.scan.root))  # lesson.summary's step 2, with each repeat's runs
    cols = st.columns(3)
    cols[0].metric("Images in the official val folder", numbers["official_val_images"])
    cols[1].metric("Children on both sides of a random image split (train/test)",
                   numbers["naive_split_children_on_both_sides"]["train/test"])
    cols[2].metric("The same, in the patient-level split used here",
                   sum(row["shared_ids"] for row in numbers["leakage_check"] if row["exact"]))
    measured = numbers["measured"]
    st.subheader("How much does an image-level split overstate accuracy? Measured:")
    cols = st.columns(3)
    cols[0].metric("Image-level split: accuracy", f"{measured['image_level_accuracy']:.3f}")
    cols[1].metric("Patient-level split: accuracy", f"{measured['patient_level_accuracy']:.3f}")
    cols[2].metric("Overstatement", f"{measured['overstatement']:+.3f}")
    st.caption(f"Method: {measured['method']}; on average {measured['children_on_both_sides']:.0f} children had "
               "images on both sides of the image-level split. A memorising classifier, not a trained CNN: it "
               "costs seconds, and it shows what leakage rewards.")
    runs = pd.DataFrame(measured["runs"])
    st.plotly_chart(px.strip(runs, x="split", y="accuracy", color="split", height=280), key="lesson_leak")


def _confusion_row(runs: dict, models, key: str) -> None:
    if not models:
        return
    for col, model in zip(st.columns(len(models)), models):
        run = runs.get(model)
        evaluation = run.evaluation("test") if run else None
        if evaluation:
            col.plotly_chart(figures.confusion_figure(evaluation["confusion_matrix"], run_tables.run_label(run), True),
                             key=f"lesson_cm_{key}_{model}")
            col.caption(f"accuracy {evaluation['accuracy']:.3f}, sensitivity {evaluation['sensitivity']:.3f}, "
                        f"specificity {evaluation['specificity']:.3f}, threshold {evaluation['threshold']:.3f}")


def baseline_vs_regularized(ctx: Context) -> None:
    scratch = registry.from_scratch()
    st.subheader("The study's recipe, run through this code")
    st.caption(registry.RECIPE_TEXT[Recipe.STUDY])
    study = lesson.study_runs(ctx.store, ctx.scan.root, recipe=Recipe.STUDY)
    missing = [m for m in scratch if m not in study]
    if missing:
        st.info(f"Not trained with the study's recipe on this data set yet: {', '.join(missing)}.")
        queue_training(ctx, missing, f"Train {' and '.join(missing)} (the study's recipe)", recipe=Recipe.STUDY)
    _confusion_row(study, scratch, "study")
    seed = [r for r in reference.PUBLISHED if r["name"].startswith("Seed study")]
    st.dataframe(pd.DataFrame(seed)[["name", "accuracy", "sensitivity", "specificity", "macro_f1"]], hide_index=True)
    st.caption("The seed study's published figures on the official test split, for comparison.")
    st.subheader("Then ours")
    st.caption(registry.RECIPE_TEXT[Recipe.IMPROVED])
    ours = [m for m in scratch if m in ctx.runs]
    if registry.DEFAULT_MODEL not in ctx.runs:
        queue_training(ctx, [registry.DEFAULT_MODEL], f"Train {registry.DEFAULT_MODEL} (our recipe)")
    _confusion_row(ctx.runs, ours, "ours")


def threshold(ctx: Context) -> None:
    run = pick_run(ctx, "lesson_threshold_run")
    pred = ui_runs.predictions(run.run_id, "test", ctx.store) if run else None
    if pred is None:
        return
    stored = float(run.evaluation("test")["threshold"])
    value = st.slider("Threshold", 0.0, 1.0, stored, 0.005, format="%.3f", key=f"lesson_threshold_{run.run_id}")
    at = evaluate.metrics_at_threshold(pred["label"], pred["probability"], value)
    (tn, fp), (fn, tp) = at["confusion_matrix"]
    cols = st.columns(4)
    cols[0].metric("Missed pneumonia (FN)", fn)
    cols[1].metric("False alarms (FP)", fp)
    cols[2].metric("Sensitivity", f"{at['sensitivity']:.3f}" if at["sensitivity"] is not None else "n/a")
    cols[3].metric("Specificity", f"{at['specificity']:.3f}" if at["specificity"] is not None else "n/a")
    st.plotly_chart(figures.confusion_figure(at["confusion_matrix"], f"at threshold {value:.3f}"), key="lesson_cm")
    st.caption(f"{fn} sick children sent home and {fp} healthy children treated, among {tn + fp + fn + tp} "
               f"images. The run's own threshold, chosen on validation, is {stored:.3f}.")


def shift(ctx: Context) -> None:
    run = pick_run(ctx, "lesson_shift_run")
    if run is None:
        return
    table = lesson.shift_rows(run)
    metrics_table(table)
    if lesson.VALIDATION_ROW in set(table["scored on"]):
        st.caption("This run's own test split is its folder's official test/ folder, from other days than the "
                   "training images: its validation split, carved from train, is the side without the shift.")
    st.caption("Each row is scored at the run's threshold from validation, except rows that say \"threshold from "
               "folder\": there the threshold was set on a small labelled sample of that site's own images "
               "(`python -m cxr_core evaluate RUN --data SITE --threshold-from SAMPLE`), as a hospital recalibrates "
               "a model it adopts. The ranking (AUC) is the same; the operating point fits the site.")
    if len(table) > 1:
        long = table.melt(id_vars="scored on", value_vars=list(HEADLINE_METRICS))
        st.plotly_chart(px.bar(long, x="variable", y="value", color="scored on", barmode="group", height=320,
                               labels={"variable": "", "value": ""}), key="lesson_shift")
    else:
        st.info("This run has been scored on its own test split only. Score it on another labelled folder "
                "(the official test split, configured on the server) to see the shift.")
    ui_runs.score_on_folder([run], ctx.store, page="lesson")


def calibration_step(ctx: Context) -> None:
    run = pick_run(ctx, "lesson_calibration_run")
    if run is None:
        return
    evaluation = run.evaluation("test")
    prevalence = st.slider("Prevalence of pneumonia where the model is used", 0.01, 0.99, 0.05, 0.01,
                           key="lesson_prevalence", format="%.2f")
    at = calibration.predictive_values(evaluation["sensitivity"], evaluation["specificity"], prevalence)
    cols = st.columns(4)
    cols[0].metric("PPV: a PNEUMONIA call is right", f"{at['ppv']:.1%}" if at["ppv"] is not None else "n/a")
    cols[1].metric("NPV: a NORMAL call is right", f"{at['npv']:.1%}" if at["npv"] is not None else "n/a")
    cols[2].metric("False alarms per 1000 children", f"{at['per_1000']['false_alarms']:.0f}")
    cols[3].metric("Missed per 1000 children", f"{at['per_1000']['missed']:.0f}")
    share = evaluation["n_pneumonia"] / max(evaluation["n"], 1)
    st.caption(f"At this run's sensitivity {evaluation['sensitivity']:.3f} and specificity "
               f"{evaluation['specificity']:.3f}. Its test split is {share:.0%} pneumonia.")
    try:
        report = calibration.for_run(run.run_id, ctx.store)
    except UserError as error:
        st.warning(str(error))
        return
    cols = st.columns(3)
    cols[0].metric("Expected calibration error", f"{report['ece']:.3f}", f"{report['ece_scaled'] - report['ece']:+.3f}",
                   delta_color="inverse", help="After temperature scaling in the delta.")
    cols[1].metric("Brier score", f"{report['brier']:.3f}", f"{report['brier_scaled'] - report['brier']:+.3f}",
                   delta_color="inverse")
    cols[2].metric("Temperature (fitted on validation)", f"{report['temperature']:.2f}")
    st.plotly_chart(figures.reliability_figure(report, run_tables.run_label(run)), key="lesson_reliability")


def shortcuts(ctx: Context) -> None:
    run = pick_run(ctx, "lesson_shortcut_run")
    if run is None:
        return
    table, missing = lesson.occlusion_rows(run)
    metrics_table(table)
    pred = ui_runs.predictions(run.run_id, "test", ctx.store)
    if pred is not None and len(pred):
        path = run_tables.image_root(run) / pred["path"].iloc[0]
        cols = st.columns(3)
        for col, (how, caption) in zip(cols, ((None, "as scored"), ("lungs", "lung fields blacked out"),
                                              ("outside", "only the lung fields kept"))):
            try:
                col.image(images.load_for_model(str(path), 192, occlusion=how)[..., 0], caption=caption, width=192)
            except images.ImageDecodeError as error:
                col.caption(str(error))
    if missing:
        queue_evaluation(ctx, run, "Score this run with the lung fields occluded, and with only them",
                         occlusions=missing)


def saliency(ctx: Context) -> None:
    run = pick_run(ctx, "lesson_saliency_run")
    pred = ui_runs.predictions(run.run_id, "test", ctx.store) if run else None
    if pred is None or pred.empty:
        return
    names = pred.sort_values("probability", ascending=False)["path"].head(12).tolist()
    picked = st.selectbox("Image (the run's most confident PNEUMONIA calls)", names, key="lesson_saliency_image")
    path = str(run_tables.image_root(run) / picked)
    threshold = ctx.store.threshold(run.run_id)
    label = "PNEUMONIA" if float(pred.set_index("path").loc[picked, "probability"]) >= threshold else "NORMAL"
    # Both maps come from the predictor process: the server never loads TensorFlow.
    with st.spinner("Computing both heat maps..."):
        maps = ui_runs.predictor().sanity_maps(run.run_id, str(ctx.store.root), path, label)
    gray = images.read_image_file(path)
    cols = st.columns(2)
    cols[0].image(heatmap.heatmap_image(gray, maps["trained"]), caption=f"trained model: evidence for {label}")
    cols[1].image(heatmap.heatmap_image(gray, maps["randomized"]), caption="the same network, random weights")
    similarity = maps["similarity"]
    st.metric("Rank correlation of the two maps (Spearman)", "n/a (a flat map)" if np.isnan(similarity) else f"{similarity:.2f}",
              help="Near 1: the map hardly depends on what the model learnt.")


def transfer(ctx: Context) -> None:
    table = lesson.transfer_rows(ctx.store, ctx.scan.root)
    metrics_table(table)
    done = table[table["auc"].notna()]
    if not done.empty:
        st.plotly_chart(px.bar(done, x="model", y="auc", color="weights", height=300, range_y=[0, 1]),
                        key="lesson_transfer")
    if (table["weights"].str.startswith("random: ImageNet")).any():
        st.warning("Runs marked 'ImageNet weights NOT used' started from random weights (settings weights "
                   "'none', as on a machine without a network): they say nothing about what ImageNet buys.")
    missing = [m for m in registry.pretrained() if m not in set(table["model"])]
    if missing:
        weights = ui_runs.weights_choice("lesson_weights")
        queue_training(ctx, missing, f"Train {', '.join(missing)}", weights=weights)


VIEWS = (census, validation_trap, baseline_vs_regularized, threshold, shift, calibration_step, shortcuts,
         saliency, transfer)
