"""The Home page's study at a glance: sample X-rays of each class, and the run chosen on validation with its
figures on the official test split."""

from __future__ import annotations

import streamlit as st

from cxr_core import explore, run_tables
from cxr_core.config import CLASSES, METRIC_LABELS
from cxr_core.store import RunState, RunStore
from ui import data_sets
from ui.navigation import link_to_train

PER_CLASS = 3
SHOWN_METRICS = ("accuracy", "sensitivity", "specificity", "auc")


def sample_row(scan, split) -> None:
    """PER_CLASS training images of each class, side by side, as the model sees them."""
    st.caption("Training images of each class from the active data set, padded square as the model sees them.")
    columns = st.columns(PER_CLASS * len(CLASSES))
    label = " (SYNTHETIC)" if scan.synthetic else ""
    for c, class_name in enumerate(CLASSES):
        gallery = explore.sample_gallery(split, split="train", class_name=class_name, n=PER_CLASS, seed=0)
        for i, path in enumerate(gallery["path"]):
            pixels = data_sets.thumbnail(str(path), size=160)
            column = columns[c * PER_CLASS + i]
            if pixels is None:
                column.warning(f"{class_name}: unreadable file")
            else:
                column.image(pixels, caption=class_name + label)


@st.cache_data(ttl=60, show_spinner=False)
def _best_run(root: str, data_dir: str, signature: tuple) -> dict | None:
    # signature (run ids, states, scorings) is the key: a finished run or a new scoring shows at once.
    return run_tables.best_run(RunStore(root).list(), data_dir)


def best_run_heading(synthetic: bool) -> str:
    # The demo set's test/ folder is drawn shapes, not the official split: it never borrows that name.
    return ("Best run on the demo set's test split (SYNTHETIC)" if synthetic
            else "Best run, chosen on validation, on the official test split")


def _interval(low_high) -> str | None:
    # Formatted here: evaluate.with_interval would import scipy.stats into the light Home page.
    if not low_high or None in low_high:
        return None
    return f"[{low_high[0]:.3f}, {low_high[1]:.3f}]"


def _split_name(best: dict) -> str:
    return "the demo set's test split" if best["synthetic"] else "the official test split"


def best_run_panel(store: RunStore, runs: list, data_dir) -> None:
    """The run chosen on validation, with its figures (and 95% intervals) on the official test split, or
    what to do to get one."""
    signature = tuple((r.run_id, str(r.state), tuple(r.evaluation_sources("test"))) for r in runs)
    best = _best_run(str(store.root), str(data_dir), signature)
    if best is None:
        if not any(r.state == RunState.DONE for r in runs):
            st.info("No runs yet. Start on the Train page: one click trains the regularized CNN on this data "
                    "set in a few minutes on a laptop CPU.")
        else:
            st.info("No finished run on this data set has both a validation AUC and figures on the official "
                    "test split yet. A run trained on a copy without the official test/ folder gets them from "
                    "the Compare page's \"Score these runs on another labelled folder\".")
        link_to_train()
        return
    columns = st.columns(len(SHOWN_METRICS))
    for column, metric in zip(columns, SHOWN_METRICS):
        column.metric(METRIC_LABELS[metric].capitalize() if metric != "auc" else "AUC",
                      "n/a" if best[metric] is None else f"{best[metric]:.3f}",
                      help=f"95% interval over patients: {_interval(best['ci95'].get(metric)) or 'n/a'}")
    intervals = ", ".join(f"{'AUC' if m == 'auc' else METRIC_LABELS[m]} {_interval(best['ci95'].get(m))}"
                          for m in SHOWN_METRICS if _interval(best["ci95"].get(m)))
    st.caption(f"{best['label']}, {best['rule']} (validation AUC {best['validation_auc']:.3f}). "
               f"Figures on {_split_name(best)} ({best['where']}, {best['n']} images) at threshold "
               f"{best['threshold']:.3f}" + (f"; 95% intervals over patients: {intervals}." if intervals else ".")
               + " Sensitivity is pneumonia recall, specificity normal recall."
               + (" SYNTHETIC demo data: these figures say nothing about real X-rays." if best["synthetic"] else ""))
