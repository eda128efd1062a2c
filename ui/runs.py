"""Runs as pages use them: the store, stored predictions and the predictor process (cached), the
"no finished runs yet" state, and queueing a scoring job on the background worker."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cxr_core import figures, inference, jobs, run_tables
from cxr_core.config import UserError
from cxr_core.predictor import Predictor
from cxr_core.store import ACTIVE_STATES, OWN, RunState, RunStore, evaluation_files
from ui import data_sets, teacher
from ui.navigation import link_to_train


def weights_choice(key: str) -> str:
    """Where a pretrained model's base starts: ImageNet or random weights (registry.Weights)."""
    from cxr_core.registry import Weights

    return st.radio("Start from", tuple(Weights), horizontal=True, key=key, format_func={
        Weights.IMAGENET: "ImageNet weights (downloaded once; needs a network)",
        Weights.NONE: "random weights (works offline, learns slowly; no test of transfer)"}.get)


def store() -> RunStore:
    return RunStore()  # root from CXR_RUNS_DIR, read on every call so tests can point it elsewhere


@st.cache_resource(show_spinner=False, on_release=lambda predictor: predictor.close())
def predictor() -> Predictor:
    """The server's one predictor process (cxr_core/predictor.py), started on the first Predict visit.

    TensorFlow and the models live there, never in the server: importing
    TensorFlow here made Predict's first visit take seconds, and importing it
    in a server thread held the interpreter lock long enough to starve every
    other session. Starting the process costs the page milliseconds; it loads
    TensorFlow while the person picks a file.
    """
    return Predictor(log_path=str(store().root / "predictor.log") if store().root.is_dir() else None)


@st.cache_data(max_entries=64, show_spinner=False)
def _predictions(run_id: str, split: str, root: str, key: str, source: str, mtime: int):
    return inference.predictions(run_id, split, RunStore(root), source)


def predictions(run_id: str, split: str, runs: RunStore, source: str = OWN) -> pd.DataFrame | None:
    """A run's stored predictions; re-read when the evaluation is redone (the file's mtime is in the key)."""
    path = evaluation_files(runs.run_path(run_id), split, source)[1]
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _predictions(run_id, split, str(runs.root), inference.model_key(run_id, runs), source, mtime)


def history_chart(runs: dict, colors: dict | None = None):
    """figures.history_figure of {label: run}, or None when no run recorded a history.

    Built once per change of the runs' history files for every session: the Train page redraws its live
    curves every 2 seconds in each open tab, and building the figure was a fifth of the server's CPU in a
    classroom profile (10 sessions while a model trained). Streamlit serializes a copy of it per session."""
    stamps = []
    for label, run in runs.items():
        history = run.path / "history.json"
        stamps.append((label, str(run.path), history.stat().st_mtime_ns if history.is_file() else 0))
    return _history_chart(tuple(stamps), tuple(sorted((colors or {}).items())), runs)


@st.cache_resource(max_entries=32, show_spinner=False)
def _history_chart(stamps: tuple, colors: tuple, _runs: dict):
    history = run_tables.history_frame(_runs)
    return None if history.empty else figures.history_figure(history, colors=dict(colors) or None)


def analyse(run_id: str, runs: RunStore, content: bytes, name: str) -> dict:
    """inference.analyse() of an upload (bytes, never written to disk) by one run, in the predictor process."""
    return _analyse(run_id, str(runs.root), inference.model_key(run_id, runs), content, name)


@st.cache_data(max_entries=128, show_spinner="Predicting...")
def _analyse(run_id: str, root: str, key: str, content: bytes, name: str) -> dict:
    # Cached for every session: a class that uploads the same X-ray pays for it once. Raises
    # ImageDecodeError for a file that is not an image.
    return predictor().analyse(run_id, root, content, name)


def finished_or_stop(runs: RunStore, empty_message: str) -> dict:
    """{legend label: run} of finished runs; with none, an explanation and a link to Train, then stop."""
    finished = {run_tables.run_label(r): r for r in runs.finished()}
    if not finished:
        st.info(empty_message)
        link_to_train()
        st.stop()
    return finished


def score_on_folder(chosen: list, runs: RunStore, page: str) -> None:
    """One click queues scoring `chosen` runs on a configured labelled folder; progress shows in place.

    `page` keeps each page's widgets and its "scoring" flag apart: scoring started on Compare is
    followed on Compare, not on the Lesson."""
    scoring = f"_scoring_{page}"
    with st.expander("Score these runs on another labelled folder"):
        st.caption("For example the official test split: a folder with test/NORMAL and test/PNEUMONIA (or bare "
                   "NORMAL/ and PNEUMONIA/ folders), configured on the server with CXR_DATA_DIR or CXR_DATA_ROOTS. "
                   "The background worker scores each run after any training; the result is stored beside the "
                   "run's own evaluation.")
        may_queue = teacher.allowed("queue scorings")
        cols = st.columns([3, 1])
        label = cols[0].selectbox("Folder", list(data_sets.sources()), key=f"{page}_score_folder",
                                  label_visibility="collapsed")
        if cols[1].button("Score", icon=":material/playlist_add:", disabled=not chosen or not may_queue,
                          key=f"{page}_score_button") and may_queue:
            try:
                for run in chosen:
                    jobs.submit_evaluation(run.run_id, data_sets.folder(label), runs)
            except UserError as error:
                st.error(str(error))
            st.session_state[scoring] = True
        if st.session_state.get(scoring):
            _scoring_progress(tuple(run.run_id for run in chosen), str(runs.root), scoring)


@st.fragment(run_every=3)
def _scoring_progress(run_ids: tuple, root: str, scoring: str) -> None:
    requests = [r for r in jobs.evaluation_requests(RunStore(root)) if r["run"] in run_ids]
    pending = [r for r in requests if r["state"] in ACTIVE_STATES]
    for request in requests[-len(run_ids):]:
        if request["state"] in (RunState.FAILED, RunState.INTERRUPTED):
            st.error(f"{request['run']}: {request.get('error') or 'the worker stopped'}")
    if pending:
        st.info(f"Scoring {len(pending)} run(s): " + ", ".join(f"{r['run']} ({r['state']})" for r in pending))
    else:
        st.session_state[scoring] = False
        st.rerun()  # the whole page, so the new folder appears in "Evaluated on"
