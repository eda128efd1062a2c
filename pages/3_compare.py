"""Compare finished runs: metrics with intervals, confusion matrices under a live threshold, curves, McNemar."""

import os

import pandas as pd
import streamlit as st

from cxr_core import evaluate, figures, reference, report, run_tables
from cxr_core.config import METRICS, UserError
from cxr_core.store import OWN
from ui import data_sets
from ui import runs as ui_runs
from ui.navigation import entry_guard
from ui.texts import DEMO_LABEL, SYNTHETIC_NOTE

entry_guard(__file__)


def highlight_best(table: pd.DataFrame):
    """The best value of each metric column in bold green (ties all marked); for Styler.apply."""
    def column(shown: pd.Series) -> list[str]:
        values = pd.to_numeric(table[shown.name], errors="coerce") if shown.name in METRICS else None
        if values is None or values.notna().sum() < 2:
            return [""] * len(shown)
        return ["background-color: #c6f6d5; font-weight: bold" if v == values.max() else "" for v in values]
    return column


st.title("Compare runs")
st.markdown("Put finished runs side by side on the same held-out images. Sensitivity is the share of pneumonia "
            "cases caught, specificity the share of healthy children correctly cleared; the intervals show how "
            "much each figure could move on another sample of images.")
store = ui_runs.store()
finished = ui_runs.finished_or_stop(store, "No finished runs yet. Train a model first; it appears here when it is done.")

cols = st.columns([1, 3])
chosen = cols[1].multiselect("Runs", list(finished), default=list(finished)[:2], key="compare_runs")
picked = [finished[label] for label in chosen]
split, source = cols[0].selectbox("Evaluated on", run_tables.evaluation_choices(picked),
                                  format_func=lambda choice: run_tables.evaluation_label(choice, picked),
                                  key="compare_on",
                                  help="The run's own splits (carved from its training data) or another labelled "
                                       "folder it was scored on, such as the official test split.")
ui_runs.score_on_folder([finished[label] for label in chosen], store, page="compare")
runs = {label: finished[label] for label in chosen if finished[label].evaluation(split, source)}
if len(runs) < len(chosen):
    st.warning(f"Left out (not scored on the {run_tables.evaluation_label((split, source), picked)}): "
               f"{', '.join(set(chosen) - set(runs))}.")
if not runs:
    st.info("Choose at least one run above.")
    st.stop()
if source == OWN and (split != "test" or not all(run_tables.own_test_is_official(r) for r in runs.values())):
    st.caption("This split is carved from the same folder the run trained on: in-distribution, it flatters "
               "every model. A folder like the official test split shows how a model meets new children.")
evaluations = {label: run.evaluation(split, source) for label, run in runs.items()}
preds = {label: ui_runs.predictions(run.run_id, split, store, source) for label, run in runs.items()}
if len(runs) > 1 and not run_tables.same_images([p for p in preds.values() if p is not None]):
    st.warning("These runs were evaluated on different images (another data folder or another split), so their "
               "differences mix up the models and the data. Compare runs trained on the same data set.")
if any(run.status.get("synthetic") for run in runs.values()):
    st.caption(f"Some of these runs were trained on the {DEMO_LABEL}. {SYNTHETIC_NOTE}")

st.header("Metrics")
table = run_tables.metrics_table(evaluations)
st.dataframe(run_tables.metrics_text(table).style.apply(highlight_best(table)), hide_index=True)
st.caption("At each run's own threshold (its recipe's rule: chosen on validation, or fixed at 0.5 for the study's "
           "recipe), unless the evaluation says it was taken from a labelled folder. In brackets: 95% bootstrap "
           "intervals. The best value per column is highlighted.")
calibrated = run_tables.threshold_sources(runs, split, source)
if not calibrated.empty:
    st.subheader("Threshold from validation, or from a labelled sample of the site")
    st.dataframe(calibrated, hide_index=True, column_config={
        m: st.column_config.NumberColumn(format="%.3f") for m in ("threshold", *METRICS)})
    st.caption("A hospital that adopts a model sets its operating point on a small labelled sample of its own "
               "images (`python -m cxr_core evaluate RUN --data SITE --threshold-from SAMPLE`): the same model, "
               "the same ranking, a threshold that fits the site. The sample never includes the images scored.")
st.download_button("Download report", icon=":material/download:", file_name="compare_report.html", mime="text/html",
                   data=lambda: report.build_report([run.run_id for run in runs.values()], store, split=split,
                                                    source=source),
                   help="One HTML file with these runs, their settings, the data, intervals, figures and the date; "
                        "it opens without a network.")
st.subheader("Published results on the official Kaggle test split")
st.dataframe(run_tables.published_table(), hide_index=True, placeholder="–",
             column_config={"name": st.column_config.TextColumn(width="large"),
                            "source": st.column_config.TextColumn(width="medium")})
st.caption(reference.NOT_COMPARABLE)

st.header("Confusion matrices and the decision threshold")
st.markdown("A model outputs a probability of pneumonia and calls PNEUMONIA at or above its threshold. Lower "
            "the threshold and fewer pneumonias are **missed** (false negatives, FN: a sick child sent home), "
            "but more healthy children get a **false alarm** (false positives, FP: needless worry, tests or "
            "antibiotics). Raise it and the reverse happens.")
normalized = st.toggle("Show shares of each true class (row-normalized)", key="normalized")
points = {}
for col, (label, run) in zip(st.columns(max(len(runs), 2)), runs.items()):
    stored = float(evaluations[label]["threshold"])
    with col:
        pred = preds[label]
        if pred is None:
            st.warning(f"{label}: no predictions file; re-evaluate it with `python -m cxr_core evaluate`.")
            continue
        threshold = st.slider(f"Threshold of {label}", 0.0, 1.0, stored, 0.005, key=f"threshold_{run.run_id}",
                              format="%.3f")
        at = points[label] = evaluate.metrics_at_threshold(pred["label"], pred["probability"], threshold)
        st.plotly_chart(figures.confusion_figure(at["confusion_matrix"], label, normalized), key=f"cm_{label}")
        (tn, fp), (fn, tp) = at["confusion_matrix"]
        base = evaluate.metrics_at_threshold(pred["label"], pred["probability"], stored)
        m = st.columns(2)
        for box, key in zip(m, ("sensitivity", "specificity")):
            value, before = at[key], base[key]
            delta = None if value is None or before is None or threshold == stored else f"{value - before:+.3f}"
            box.metric(key.capitalize(), "n/a" if value is None else f"{value:.3f}", delta)
        st.caption(f"{fn} missed pneumonia (FN) and {fp} false alarms (FP) among {tn + fp + fn + tp} images.")

st.header("ROC and precision-recall curves")
st.markdown("Each curve is every threshold at once; the circle is where the threshold above puts the run. "
            "Grey crosses are published results on the official test split (not directly comparable).")
st.plotly_chart(figures.curves_figure(evaluations, points, figures.run_colors(runs)), key="curves")

st.header("Training curves")
chart = ui_runs.history_chart(runs, figures.run_colors(runs))
if chart is None:
    st.info("These runs recorded no per-epoch history.")
else:
    st.plotly_chart(chart, key="history")
    st.caption("Solid: training images; dashed: validation images. A widening gap is overfitting.")

if len(points) >= 2:
    st.header("Is the difference more than chance? (McNemar test)")
    pair = st.columns(2)
    a = pair[0].selectbox("Run A", list(points), index=0, key="mcnemar_a")
    b = pair[1].selectbox("Run B", list(points), index=1, key="mcnemar_b")
    result = None if a == b else run_tables.mcnemar_between(preds[a], preds[b], points[a]["threshold"],
                                                         points[b]["threshold"], a, b)
    if result is None:
        st.info("Choose two different runs evaluated on the same images.")
    else:
        cols = st.columns(3)
        cols[0].metric("Only A right", result["a_right_b_wrong"])
        cols[1].metric("Only B right", result["a_wrong_b_right"])
        cols[2].metric("p-value", f"{result['p_value']:.3g}")
        st.markdown(result["reading"])
        st.caption(f"On the {result['n']} images both runs predicted, at the thresholds chosen above.")

st.header("The images behind a cell")
cols = st.columns(2)
label = cols[0].selectbox("Run", list(points), key="cell_run")
cell = cols[1].selectbox("Cell", list(run_tables.CELLS), index=2, key="cell",
                         format_func=lambda k: f"{k}: {run_tables.CELLS[k][2]}")
if label:
    rows = run_tables.confusion_cell(preds[label], points[label]["threshold"], cell)
    st.caption(f"{len(rows)} images; the most confident calls first.")
    try:
        root = run_tables.image_root(runs[label], evaluations[label])
    except UserError as error:
        st.warning(f"The images of this run cannot be shown: {error}")
        rows = rows.iloc[:0]
    data_sets.thumbnail_grid((root / row["path"], f"{os.path.basename(row['path'])} · P(pneumonia) "
                              f"{row['probability']:.3f}") for _, row in rows.head(12).iterrows())
