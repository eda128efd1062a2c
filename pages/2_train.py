"""Train: launch one of the five study models as a background job, watch it learn, manage runs."""

from dataclasses import replace

import streamlit as st

from cxr_core import ensemble, jobs, registry, run_tables
from cxr_core.config import HEADLINE_METRICS, UserError
from cxr_core.registry import RECIPE_TEXT, Recipe, Weights
from cxr_core.store import ACTIVE_STATES, RunState
from ui import data_sets, model_import, teacher
from ui import runs as ui_runs
from ui.navigation import entry_guard

entry_guard(__file__)
st.title("Train")
st.markdown("Pick a model and a recipe and launch it. Training runs in its own background process, one job at "
            "a time (the rest wait in a queue), so you can switch pages, refresh or close the browser while it "
            "learns. The curves show loss and accuracy on the training images and on held-out validation images.")
scan, _ = data_sets.require()
data_sets.caption(scan)
store = ui_runs.store()


st.header("Launch a run")
cols = st.columns([1, 2])
names = registry.names()
model = cols[0].selectbox("Model", names, index=names.index(registry.DEFAULT_MODEL), key="train_model")
recipe = cols[1].radio("Recipe", tuple(Recipe), horizontal=True, key="train_recipe",
                       format_func=lambda r: "ours (improved)" if r == Recipe.IMPROVED else "the study's",
                       help="\n\n".join(RECIPE_TEXT.values()))
st.info(registry.description(model), icon=":material/info:")
defaults = registry.default_settings(model, recipe)
if recipe == Recipe.STUDY:
    with st.expander("What the study states, and what was filled in where it is silent"):
        st.markdown("\n".join(f"- {note}" for note in registry.STUDY_NOTES))


def choices(options: list, default) -> list:
    return sorted({*options, default})  # the model's default recipe is always among a widget's choices

with st.form("recipe"):
    cols = st.columns(3)
    epochs = cols[0].number_input("Epochs", 1, 200, defaults.epochs, key=f"epochs_{model}_{recipe}",
                                  help="Training stops early when validation AUC stops improving.")
    batches = choices([8, 16, 32, 64, 128], defaults.batch_size)
    batch_size = cols[1].selectbox("Batch size", batches, index=batches.index(defaults.batch_size),
                                   key=f"batch_{model}_{recipe}")
    learning_rate = cols[2].select_slider("Learning rate", choices([1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
                                                                   defaults.learning_rate),
                                          value=defaults.learning_rate, format_func=lambda v: f"{v:g}",
                                          key=f"lr_{model}_{recipe}")
    cols = st.columns(3)
    image_size = cols[0].select_slider("Image size (pixels a side)", choices([64, 96, 128, 160, 192, 224],
                                                                             defaults.image_size),
                                       value=defaults.image_size, key=f"size_{model}_{recipe}")
    augment = cols[1].checkbox("Augmentation (flip, rotation, zoom)" if defaults.augmentation == "study" else
                               "Augmentation (rotation, zoom, shift, contrast)", defaults.augment, key=f"aug_{model}_{recipe}")
    weighting = cols[2].checkbox("Class weighting (inverse frequency)", defaults.class_weighting, key=f"cw_{model}_{recipe}")
    weights = defaults.weights
    if defaults.weights == Weights.IMAGENET:
        weights = ui_runs.weights_choice(f"weights_{model}")
    members = st.number_input("Ensemble members (1 = a single run)", 1, 5, 1, key=f"members_{model}_{recipe}",
                              help="Several runs on one patient split with different seeds, trained one after "
                                   "another as one job; the ensemble's probability is their mean, which varies "
                                   "less from seed to seed than one run's.")
    may_train = teacher.allowed("train or queue runs")
    launch = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:", disabled=not may_train)
if launch and may_train:
    settings = replace(defaults, epochs=int(epochs), batch_size=batch_size, learning_rate=learning_rate,
                       image_size=image_size, augment=augment, class_weighting=weighting, weights=weights)
    ahead = jobs.ahead_of_a_new_run(store)
    try:
        run_id = (ensemble.submit(settings, int(members), scan.root, store) if members > 1
                  else jobs.submit(settings, scan.root, store))
        st.success(f"Run {run_id} queued behind {ahead} other run(s)." if ahead else f"Run {run_id} started.")
    except UserError as error:
        st.error(str(error))

lineup_col, note_col = st.columns([1, 3])
if lineup_col.button("Train the study's lineup", icon=":material/playlist_play:", disabled=not may_train) and may_train:
    try:
        queued = jobs.queue_lineup(registry.names(), scan.root, store, recipe=recipe)
        st.success(f"Queued {len(queued)} runs ({recipe} recipe): {', '.join(queued)}. They train one after "
                   "another." if queued else "Every model of the lineup is already waiting or training.")
    except UserError as error:
        st.error(str(error))
note_col.caption("Queues every model with the recipe chosen above. The transfer models start from ImageNet "
                 "weights, which must be downloaded once: without a network those runs fail with a message "
                 "that says how to provide the weights file.")
model_import.import_form(str(store.root))


@st.fragment(run_every="2s")
def live_progress() -> None:
    runs = store.list()
    running = [r for r in runs if r.state == RunState.RUNNING]
    waiting = jobs.queued(store)
    may_stop = bool(running or waiting) and teacher.allowed("stop or remove runs")
    for run in running:
        progress = run_tables.training_progress(run)
        st.subheader(f"Training {run_tables.run_label(run)}")
        st.progress(progress["fraction"], text=progress["text"])
        cols = st.columns(3)
        cols[0].metric("Elapsed", progress["elapsed"])
        cols[1].metric("Estimated remaining", progress["remaining"])
        if cols[2].button("Stop", key=f"stop_{run.run_id}", type="primary", icon=":material/stop:",
                          disabled=not may_stop) and may_stop:
            try:
                jobs.cancel(run.run_id, store)
                st.warning("Stopping: the current batch finishes, then the run is marked cancelled.")
            except UserError as error:  # it ended between the page drawing the button and the click
                st.info(str(error))
        chart = ui_runs.history_chart({run_tables.run_label(run): run})
        if chart is None:
            st.caption("The curves appear when the first epoch ends.")
        else:
            st.plotly_chart(chart, key=f"live_{run.run_id}")
    if not running:
        st.caption("No model is training right now.")
    for run in waiting:
        cols = st.columns([4, 1])
        cols[0].write(f"Queued: **{run_tables.run_label(run)}** ({run.settings.get('epochs')} epochs)")
        if cols[1].button("Remove", key=f"dequeue_{run.run_id}", disabled=not may_stop) and may_stop:
            try:
                jobs.cancel(run.run_id, store)
            except UserError:
                pass  # it left the queue in the meantime; the rerun shows where it is now
            st.rerun(scope="app")
    st.header("Runs")
    if not runs:
        st.info("No runs yet: launch one above. On the demo data a regularized CNN at 64 to 128 pixels trains "
                "in a minute or two on a laptop CPU.")
    else:
        st.dataframe(run_tables.runs_table(runs), hide_index=True, placeholder="–", column_config={
            m: st.column_config.NumberColumn(format="%.3f") for m in HEADLINE_METRICS})
        st.caption("Metrics are on the run's test split at the threshold chosen on validation. States: queued, "
                   "running, done, failed, cancelled, interrupted (the process died), broken (files missing or "
                   "unreadable).")
    jobs.keep_queue_moving(store)
    # When a run starts or ends between two timed reruns, rerun the whole page so the delete list follows.
    if st.session_state.get("train_signature") != signature(runs):
        st.rerun(scope="app")


def signature(runs) -> tuple:
    return tuple((r.run_id, r.state) for r in runs)


st.header("Progress")
st.session_state["train_signature"] = signature(store.list())
live_progress()

runs = store.list()
deletable = [r.run_id for r in runs if r.state not in ACTIVE_STATES]
if deletable:
    cols = st.columns([3, 1], vertical_alignment="bottom")
    target = cols[0].selectbox("Delete a run", deletable, key="delete_target")
    may_delete = teacher.allowed("delete runs")
    if cols[1].button("Delete...", icon=":material/delete:", disabled=not may_delete) and may_delete:
        st.session_state["confirm_delete"] = target
    if st.session_state.get("confirm_delete") == target and may_delete:
        st.warning(f"Delete run **{target}** and its model for good?")
        yes, no = st.columns(2)
        if yes.button("Yes, delete it", type="primary"):
            st.session_state.pop("confirm_delete", None)
            try:
                store.delete(target)
                st.rerun()
            except UserError as error:
                st.error(str(error))
        if no.button("Cancel"):
            st.session_state.pop("confirm_delete", None)
            st.rerun()
