"""What the dashboard's pages share: the active data set, the run store, cached loaders, charts.

Pages import it as `import dashboard` (Streamlit puts the app's folder on
sys.path). Numbers and figures come from `cxr_core` (charts from
`cxr_core.figures`, re-exported here); this module only caches them, so that
each page stays a short layout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core import config, data, demo, explore, images, inference, jobs
from cxr_core.figures import (CLASS_COLORS, confusion_figure, counts_figure, curves_figure,  # noqa: F401
                              history_figure, run_colors)  # the pages' charts, drawn in cxr_core
from cxr_core.config import CLASSES, UserError
from cxr_core.predictor import Predictor
from cxr_core.store import OWN, RunStore, evaluation_files

DEMO_LABEL = "Demo data set (SYNTHETIC)"
NOT_CLINICAL = ("**Not for clinical use.** This is a teaching and research tool; its predictions must never "
                "inform the care of a patient.")
SYNTHETIC_NOTE = ("The demo images are SYNTHETIC: drawn shapes that resemble chest X-rays in outline, "
                  "not images of any person. Numbers on them say nothing about real X-rays.")


# ---------------------------------------------------------------- predictions


@st.cache_resource(show_spinner=False, on_release=lambda predictor: predictor.close())
def predictor() -> Predictor:
    """The server's one predictor process (cxr_core/predictor.py), started on the first Predict visit.

    TensorFlow and the models live there, never in the server: importing
    TensorFlow here made Predict's first visit take seconds, and importing it
    in a server thread held the interpreter lock long enough to starve every
    other session. Starting the process costs the page milliseconds; it loads
    TensorFlow while the person picks a file.
    """
    return Predictor(log_path=str(run_store().root / "predictor.log") if run_store().root.is_dir() else None)


# ---------------------------------------------------------------- data set


ENTRY_FLAG = "_entered_through_app"
DEEP_LINK = "_deep_link_page"


def entry_guard(page_file: str) -> None:
    """Send a page that runs without app.py (a deep link right after a restart) through app.py.

    Streamlit runs a pages/ file on its own until some session has called
    st.navigation; app.py sets ENTRY_FLAG before it runs any page, so a page
    that finds the flag missing was not reached through it. app.py then opens
    the page that was asked for (DEEP_LINK), now with navigation and sidebar.
    """
    if not st.session_state.get(ENTRY_FLAG):
        # The query string too: switching pages clears it, and the Lesson's ?step=4 must survive.
        st.session_state[DEEP_LINK] = (Path(page_file).name, st.query_params.to_dict())
        st.switch_page("app.py")


def data_sources() -> dict[str, Path | None]:
    """Label -> folder for every data set the server offers; None is the demo set.

    Only folders configured on the server (CXR_DATA_DIR, and CXR_DATA_ROOTS
    separated by os.pathsep) are offered: a browser cannot point the app at
    any other path on the server's disk.
    """
    roots = [config.configured_data_dir()]
    roots += [Path(p).expanduser() for p in os.environ.get("CXR_DATA_ROOTS", "").split(os.pathsep) if p.strip()]
    sources: dict[str, Path | None] = {}
    for root in roots:
        if root is not None and str(root) not in {str(p) for p in sources.values()}:
            sources[f"{root.name or root} ({root})"] = root
    sources[DEMO_LABEL] = None
    return sources


def data_chooser() -> None:
    """The sidebar's data set selectbox; its choice is st.session_state["data_source"]."""
    st.sidebar.selectbox(
        "Data set", list(data_sources()), key="data_source",
        help="The folders configured on the server (CXR_DATA_DIR, CXR_DATA_ROOTS) and the synthetic demo set.")


@st.cache_resource(show_spinner="Generating the synthetic demo data set (once, a few seconds)...")
def _demo_dir(path: str) -> Path:
    return demo.ensure_demo_dataset(path)


def active_data_dir() -> Path:
    sources = data_sources()
    choice = st.session_state.get("data_source")
    path = sources.get(choice, sources[next(iter(sources))])
    return path if path is not None else _demo_dir(str(config.demo_data_dir()))


@st.cache_data(ttl=300, show_spinner="Scanning the data folder...")
def load_split(root: str, seed: int = 42):
    """(Scan, split manifest) of a folder, split by patient as training would with this seed."""
    scan = data.scan_folder(root)
    return scan, data.assign_splits(scan.manifest, seed=seed)


def require_data():
    """(Scan, split manifest) of the active data set, or a helpful message and the page stops."""
    try:
        return load_split(str(active_data_dir()))
    except UserError as error:
        st.warning(f"The chosen data set cannot be used. {error}")
        st.info("Choose the demo data set in the sidebar, or set CXR_DATA_DIR to a folder in the Kaggle "
                "layout (train/NORMAL, train/PNEUMONIA) and restart the app.")
        st.stop()


def data_caption(scan) -> None:
    if scan.synthetic:
        st.caption(f"Data: {DEMO_LABEL} at `{scan.root}`. {SYNTHETIC_NOTE}")
    else:
        st.caption(f"Data: `{scan.root}` ({len(scan.manifest):,} images)")


def thumbnail(path: str, size: int = 192) -> np.ndarray | None:
    """A file as the model sees it (padded square), for galleries; None if it cannot be read."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _thumbnail(path, size, mtime)


@st.cache_data(max_entries=512, show_spinner=False)
def _thumbnail(path: str, size: int, mtime: int) -> np.ndarray | None:
    # Shared by every session: a class opening the same gallery decodes each file once (36 KB each).
    try:
        return images.load_for_model(path, size)[..., 0]
    except images.ImageDecodeError:
        return None


# ---------------------------------------------------------------- runs and models


def run_store() -> RunStore:
    return RunStore()  # root from CXR_RUNS_DIR, read on every call so tests can point it elsewhere


@st.cache_data(max_entries=64, show_spinner=False)
def _predictions(run_id: str, split: str, root: str, key: str, source: str, mtime: int):
    return inference.predictions(run_id, split, RunStore(root), source)


def predictions(run_id: str, split: str, store: RunStore, source: str = OWN) -> pd.DataFrame | None:
    """A run's stored predictions; re-read when the evaluation is redone (the file's mtime is in the key)."""
    path = evaluation_files(store.run_path(run_id), split, source)[1]
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _predictions(run_id, split, str(store.root), inference.model_key(run_id, store), source, mtime)


def analyse(run_id: str, store: RunStore, content: bytes, name: str) -> dict:
    """inference.classify()'s result plus "heatmap" and "model", for an upload (bytes, never written to disk)."""
    return _analyse(run_id, str(store.root), inference.model_key(run_id, store), content, name)


@st.cache_data(max_entries=128, show_spinner="Predicting...")
def _analyse(run_id: str, root: str, key: str, content: bytes, name: str) -> dict:
    """inference.analyse() of one upload by one run, in the predictor process; raises ImageDecodeError
    for bad files. Cached for every session: a class that uploads the same X-ray pays for it once."""
    return predictor().analyse(run_id, root, content, name)


def keep_queue_moving(store: RunStore) -> None:
    """Start a worker when runs or evaluations wait but none works (say, after a server restart)."""
    created = [r.status.get("created") or 0 for r in jobs.queued(store)]
    created += [r.get("created") or 0 for r in jobs.queued_evaluations(store)]
    # A worker started moments ago may not hold its lock yet: give it time before starting another.
    if created and time.time() - min(created) > 15 and not jobs.worker_running(store):
        jobs.spawn_worker(store)


def with_default(options: list, default) -> list:
    """The choices of a recipe widget, with the model's default recipe always among them."""
    return sorted({*options, default})


def unique_names(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Batch entries told apart: two uploads called image.jpg become image.jpg and image.jpg (2)."""
    seen: dict[str, int] = {}
    named = []
    for name, content in files:
        seen[name] = seen.get(name, 0) + 1
        named.append((name if seen[name] == 1 else f"{name} ({seen[name]})", content))
    return named


def finished_runs_or_stop(store: RunStore, empty_message: str) -> dict:
    """{legend label: run} of finished runs; with none, an explanation and a link to Train, then stop."""
    finished = {explore.run_label(r): r for r in store.finished()}
    if not finished:
        st.info(empty_message)
        page_link_to_train()
        st.stop()
    return finished


def score_on_folder(runs: list, store: RunStore) -> None:
    """One click queues scoring `runs` on a configured labelled folder; progress shows in place."""
    with st.expander("Score these runs on another labelled folder"):
        st.caption("For example the official test split: a folder with test/NORMAL and test/PNEUMONIA (or bare "
                   "NORMAL/ and PNEUMONIA/ folders), configured on the server with CXR_DATA_DIR or CXR_DATA_ROOTS. "
                   "The background worker scores each run after any training; the result is stored beside the "
                   "run's own evaluation.")
        sources = data_sources()
        cols = st.columns([3, 1])
        label = cols[0].selectbox("Folder", list(sources), key="score_folder", label_visibility="collapsed")
        if cols[1].button("Score", icon=":material/playlist_add:", disabled=not runs, key="score_button"):
            folder = sources[label] or _demo_dir(str(config.demo_data_dir()))
            try:
                for run in runs:
                    jobs.submit_evaluation(run.run_id, folder, store)
            except UserError as error:
                st.error(str(error))
            st.session_state["_scoring"] = True
        if st.session_state.get("_scoring"):
            _scoring_progress(tuple(run.run_id for run in runs), str(store.root))


@st.fragment(run_every=3)
def _scoring_progress(run_ids: tuple, root: str) -> None:
    requests = [r for r in jobs.evaluation_requests(RunStore(root)) if r["run"] in run_ids]
    pending = [r for r in requests if r["state"] in ("queued", "running")]
    for request in requests[-len(run_ids):]:
        if request["state"] in ("failed", "interrupted"):
            st.error(f"{request['run']}: {request.get('error') or 'the worker stopped'}")
    if pending:
        st.info(f"Scoring {len(pending)} run(s): " + ", ".join(f"{r['run']} ({r['state']})" for r in pending))
    else:
        st.session_state["_scoring"] = False
        st.rerun()  # the whole page, so the new folder appears in "Evaluated on"


def page_link_to_train() -> None:
    st.page_link("pages/2_train.py", label="Go to Train to start a run", icon=":material/model_training:")


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def fmt_ci(value, low, high) -> str:
    from cxr_core.evaluate import with_interval  # scipy.stats: only pages with metrics pay for it

    return with_interval(None if pd.isna(value) else value,
                                  None if low is None or pd.isna(low) else (low, high))


def metrics_view(table: pd.DataFrame):
    """The metrics table as shown: value (95% interval) per cell, the best per column highlighted."""
    shown = pd.DataFrame({"run": table["run"], "images": table["n"],
                          "threshold": [f"{t:.3f}" if t is not None else "n/a" for t in table["threshold"]]})
    for metric in explore.METRICS:
        shown[metric] = [fmt_ci(v, lo, hi) for v, lo, hi in
                         zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]

    def best(column: pd.Series) -> list[str]:
        values = pd.to_numeric(table.get(column.name), errors="coerce") if column.name in explore.METRICS else None
        if values is None or values.notna().sum() < 2:
            return [""] * len(column)
        return ["background-color: #c6f6d5; font-weight: bold" if v == values.max() else "" for v in values]

    return shown.style.apply(best)
