"""The Read page's pieces: the teacher's reading sets, one student's reading, their result, the class view.

Numbers come from cxr_core.reader_metrics (the same as `python -m cxr_core reads SET --json`); this
module lays them out. The X-rays are served as decoded pixels, never by path or file name (a Kaggle
name gives the class away). Reports are cached on the set's files' modification times, so a class
view refreshing on a projector re-reads the answers only when one arrives.
"""

from __future__ import annotations

import html
import os
import secrets

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from cxr_core import figures, heatmap, images, reader_metrics, reads
from cxr_core.config import CLASSES, UserError
from cxr_core.store import RunStore
from ui import data_sets, teacher
from ui import runs as ui_runs

SESSION = "_reader_session"  # a random token per browser session: one submission per session per set
READ, CLASS_VIEW = "Read", "Class view"
DISPLAY_PX = 720


def session_token() -> str:
    if SESSION not in st.session_state:
        st.session_state[SESSION] = secrets.token_hex(16)
    return st.session_state[SESSION]


def _state(set_id: str) -> dict:
    """This session's reading of one set: nickname, answers so far, and how the submission went."""
    return st.session_state.setdefault(f"_reading_{set_id}", {"name": None, "answers": [], "outcome": None})


@st.cache_data(max_entries=256, show_spinner=False)
def _display_pixels(path: str, mtime: int) -> np.ndarray:
    gray = images.read_image_file(path, target_size=DISPLAY_PX)  # the one decoder, as training's
    picture = Image.fromarray(gray)
    picture.thumbnail((DISPLAY_PX, DISPLAY_PX))
    return np.asarray(picture)


def image_path(reading_set: dict, index: int) -> str:
    return os.path.join(reading_set["data_dir"], reading_set["images"][index]["path"])


def show_image(reading_set: dict, index: int, where=st, width="stretch") -> None:
    path = image_path(reading_set, index)
    try:
        where.image(_display_pixels(path, os.stat(path).st_mtime_ns), width=width, alt="a chest X-ray to read")
    except (OSError, UserError) as error:
        where.warning(f"Image {index + 1} cannot be shown: {type(error).__name__}. Ask the teacher to draw a new set.")


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def _report(root: str, set_id: str, version: tuple) -> dict:
    # `version` (the set's files' mtimes) renews the entry when an answer arrives; ttl picks up a run
    # that finished or was scored since.
    store, warnings = RunStore(root), []
    result = reader_metrics.report(reads.get_set(set_id, store), store, warn=warnings.append)
    return {**result, "warnings": warnings}


def report(store: RunStore, set_id: str) -> dict:
    return _report(str(store.root), set_id, reads.version(set_id, store))


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def _model_side(root: str, set_id: str) -> dict | None:
    # A student's result needs the model only: not every reader's answers, which change with each submission.
    store = RunStore(root)
    return reader_metrics.model_side(reads.get_set(set_id, store), store)


# ---------------------------------------------------------------- the teacher's sets


def teacher_panel(store: RunStore, chosen: dict | None) -> None:
    with st.expander("Reading sets (teacher)", icon=":material/assignment:"):
        if not teacher.allowed("draw, close or delete reading sets"):
            return
        cols = st.columns(3)
        n = cols[0].number_input("Images", 2, 200, reads.DEFAULT_IMAGES, key="read_new_images")
        seed = cols[1].number_input("Seed", 0, 10**6, reads.DEFAULT_SEED, key="read_new_seed")
        share = cols[2].slider("Share of PNEUMONIA", 0.1, 0.9, reads.DEFAULT_PNEUMONIA_SHARE, 0.05, key="read_new_share")
        if st.button("Draw a new set", icon=":material/add:", key="read_new"):
            try:
                made = reads.create_set(data_sets.active_dir(), store, images=int(n), seed=int(seed), pneumonia_share=share)
                st.query_params["set"] = made["id"]
                st.rerun()
            except UserError as error:
                st.error(str(error))
        st.caption("The images come from the official test split of the data set chosen in the sidebar, in one "
                   "order for every student; the command line does the same: `python -m cxr_core reads new`.")
        if chosen is None:
            return
        cols = st.columns(2)
        if chosen["state"] == reads.OPEN and cols[0].button("Close this set", icon=":material/lock:", key="read_close"):
            reads.close_set(chosen["id"], store)
            st.rerun()
        if cols[1].checkbox("Delete this set and its answers", key="read_delete_confirm") and \
                cols[1].button("Yes, delete it", icon=":material/delete:", key="read_delete"):
            reads.delete_set(chosen["id"], store)
            st.query_params.pop("set", None)
            st.rerun()


def _set_label(s: dict) -> str:
    return f"{s['id']}: {len(s['images'])} images ({s['state']})"


def choose_set(store: RunStore, sets: list[dict]) -> dict | None:
    """The set in the URL (?set=ID), else a chooser (the newest open set first); None when there is none."""
    if not sets:
        return None
    by_id = {s["id"]: s for s in sets}
    asked = st.query_params.get("set")
    ordered = sorted(sets, key=lambda s: s["state"] != reads.OPEN)
    index = [s["id"] for s in ordered].index(asked) if asked in by_id else 0
    picked = st.selectbox("Reading set", [s["id"] for s in ordered], index=index, key="read_set",
                          format_func=lambda i: _set_label(by_id[i]))
    if st.query_params.get("set") != picked:
        st.query_params["set"] = picked  # a link to this page opens this set on every laptop
    return by_id[picked]


# ---------------------------------------------------------------- one student


def _answer(set_id: str, index: int, call: str, store_root: str, total: int) -> None:
    state = _state(set_id)
    if len(state["answers"]) != index:  # a double click: the image was answered already
        return
    confidence = int(st.session_state.get(f"_confidence_{set_id}_{index}", 3))
    state["answers"].append({"answer": call, "confidence": confidence})
    if len(state["answers"]) == total:
        try:
            reads.submit(set_id, RunStore(store_root), session_token(), state["name"] or "", state["answers"])
            state["outcome"] = "counted"
        except UserError as error:
            state["outcome"] = str(error)


def reader(store: RunStore, reading_set: dict) -> None:
    """Nickname, then one image at a time until the last; then the result."""
    set_id, total = reading_set["id"], len(reading_set["images"])
    state = _state(set_id)
    if state["name"] is None:
        if reading_set["state"] != reads.OPEN:
            st.info("This reading set is closed: it takes no more answers. The class view shows its readers.")
            return
        name = st.text_input("Nickname (optional, shown beside your point on the class view)", max_chars=reads.MAX_NAME,
                             key=f"_nickname_{set_id}")
        st.markdown(f"You will see **{total} chest X-rays**, one at a time. For each, set how sure you are, then "
                    "click **NORMAL** or **PNEUMONIA**: one click answers and shows the next. You learn how you did "
                    "after the last one.")
        if st.button("Start reading", type="primary", icon=":material/play_arrow:", key="read_start"):
            state["name"] = reads.clean_name(name)
            st.rerun()
        return
    done = len(state["answers"])
    if done < total:
        _one_image(store, reading_set, done)
    else:
        result_view(store, reading_set, state)


def _one_image(store: RunStore, reading_set: dict, index: int) -> None:
    set_id, total = reading_set["id"], len(reading_set["images"])
    st.progress(index / total, text=f"Image {index + 1} of {total}")
    left, right = st.columns([3, 2])
    show_image(reading_set, index, left)
    right.slider("How sure are you? (1 = guessing, 5 = certain)", 1, 5, 3, key=f"_confidence_{set_id}_{index}")
    args = (set_id, index)
    for call in CLASSES:
        right.button(call, key=f"read_{call}", width="stretch", type="primary" if call == CLASSES[1] else "secondary",
                     on_click=_answer, args=(*args, call, str(store.root), total))


def _missed(store: RunStore, reading_set: dict, mine: list[dict], model: dict | None) -> None:
    wrong = [i for i, (image, answer) in enumerate(zip(reading_set["images"], mine))
             if answer["answer"] != CLASSES[image["truth"]]]
    if not wrong:
        st.success("You read every image right.")
        return
    st.subheader(f"The {len(wrong)} images you missed")
    for i in wrong:
        image, answer = reading_set["images"][i], mine[i]
        left, right = st.columns([2, 3])
        show_image(reading_set, i, left, width=320)
        right.markdown(f"**Image {i + 1}.** It is **{CLASSES[image['truth']]}**; you said {answer['answer']} "
                       f"(confidence {answer['confidence']}).")
        if model:
            p = model["probabilities"][i]
            right.markdown(f"The model said **{CLASSES[int(p >= model['threshold'])]}** (P(pneumonia) {p:.2f}, "
                           f"threshold {model['threshold']:.2f}).")
            if right.button("Show where the model looked", key=f"read_heatmap_{i}", icon=":material/visibility:"):
                _heatmap(store, reading_set, i, model, right)


def _heatmap(store: RunStore, reading_set: dict, index: int, model: dict, where) -> None:
    path = image_path(reading_set, index)
    with st.spinner("Computing the heat map..."):  # in the predictor process: the server never loads TensorFlow
        result = ui_runs.analyse(model["run"], store, images.read_file_bytes(path), f"image {index + 1}")
    if result.get("heatmap") is None:
        where.caption(result.get("heatmap_error", "No heat map for this model."))
        return
    where.image(heatmap.heatmap_image(images.read_image_file(path), result["heatmap"]), width=320,
                caption=f"Grad-CAM: evidence for {result['label']}")


def result_view(store: RunStore, reading_set: dict, state: dict) -> None:
    set_id = reading_set["id"]
    if state["outcome"] == "counted":
        st.success("Your answers are in: you are a point on the class view.", icon=":material/check_circle:")
    else:
        st.error(f"Not counted: {state['outcome']}")
    truth = [image["truth"] for image in reading_set["images"]]
    mine = state["answers"]
    numbers = reader_metrics.reader_metrics(truth, [a["answer"] for a in mine], [a["confidence"] for a in mine])
    model = _model_side(str(store.root), set_id)
    st.subheader("Your reading")
    cols = st.columns(4)
    cols[0].metric("Sensitivity (pneumonia found)", _fmt(numbers["sensitivity"]))
    cols[1].metric("Specificity (healthy cleared)", _fmt(numbers["specificity"]))
    cols[2].metric("Right", f"{int(np.trace(np.asarray(numbers['confusion_matrix'])))} of {numbers['n']}")
    cols[3].metric("AUC of your confidences", _fmt(numbers["auc"]))
    left, right = st.columns([2, 3])
    left.plotly_chart(figures.confusion_figure(numbers["confusion_matrix"], "Your calls"), key="read_cm")
    right.plotly_chart(roc_figure(model, [], None, you=numbers), key="read_roc")
    _missed(store, reading_set, mine, model)
    if st.button("Read this set again (practice: only your first submission counts)", key="read_again"):
        state.update(answers=[], outcome=None)
        st.rerun()


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- the room


def roc_figure(model: dict | None, readers: list[dict], vote: dict | None, you: dict | None = None) -> go.Figure:
    """The model's ROC curve and operating point on the set's images, each reader as a point, the
    majority vote, and (for one student) their own point and curve from their confidences."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="lightgrey"), name="chance")
    if model and model.get("roc"):
        fig.add_scatter(x=model["roc"]["fpr"], y=model["roc"]["tpr"], mode="lines", name=f"model ({model['model']})",
                        line_color="#2b6cb0")
        fig.add_scatter(x=[1 - model["specificity"]], y=[model["sensitivity"]], mode="markers", name="model's threshold",
                        marker=dict(size=13, symbol="circle-open", line_width=3, color="#2b6cb0"))
    points = [r for r in readers if r.get("roc_point")]
    if points:
        fig.add_scatter(x=[r["roc_point"]["fpr"] for r in points], y=[r["roc_point"]["tpr"] for r in points],
                        mode="markers", name="readers", marker=dict(size=10, color="#dd6b20", opacity=0.75),
                        hovertext=[html.escape(r["name"]) for r in points], hoverinfo="text")
    if vote and vote.get("roc_point"):
        fig.add_scatter(x=[vote["roc_point"]["fpr"]], y=[vote["roc_point"]["tpr"]], mode="markers",
                        name="majority vote", marker=dict(size=18, symbol="star", color="#c53030"))
    if you and you.get("roc"):
        fig.add_scatter(x=you["roc"]["fpr"], y=you["roc"]["tpr"], mode="lines", name="you, from your confidences",
                        line=dict(color="#dd6b20", dash="dash"))
    if you and you.get("roc_point"):
        fig.add_scatter(x=[you["roc_point"]["fpr"]], y=[you["roc_point"]["tpr"]], mode="markers", name="you",
                        marker=dict(size=16, symbol="diamond", color="#dd6b20"))
    fig.update_xaxes(title_text="1 - specificity (false alarms)", range=[-0.02, 1.02])
    fig.update_yaxes(title_text="sensitivity", range=[-0.02, 1.02])
    return fig.update_layout(height=420, margin=dict(t=30, b=10), legend=dict(orientation="h", y=-0.2))


@st.fragment(run_every=5)
def class_view(root: str, set_id: str) -> None:
    """Every submitted reader, the majority vote and the model, refreshed every few seconds for the projector."""
    store = RunStore(root)
    try:
        result = report(store, set_id)
    except UserError as error:
        st.warning(str(error))
        return
    cols = st.columns(3)
    cols[0].metric("Readers", len(result["readers"]))
    cols[1].metric("Images", len(result["set"]["images"]))
    cols[2].metric("Set", "open" if result["set"]["state"] == reads.OPEN else "closed")
    st.plotly_chart(roc_figure(result["model"], result["readers"], result["majority_vote"]), key="read_class_roc")
    for sentence in result["findings"]:
        st.markdown(f"- {sentence}")
    model = result["model"]
    if model:
        st.caption(f"The model: run {model['run']} ({model['model']}), its stored predictions on these images, at "
                   f"its own threshold {model['threshold']:.2f}." + (" Trained on the SYNTHETIC demo set."
                                                                       if model["synthetic"] else ""))
    for warning in result["warnings"]:
        st.caption(f":material/warning: {warning}")
