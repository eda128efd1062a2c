"""Predict: run finished models on uploaded X-rays (or data set images) and show where they looked."""

import os

import pandas as pd
import streamlit as st

from cxr_core import heatmap, images, inference, run_tables
from cxr_core.config import UserError
from ui import data_sets
from ui import runs as ui_runs
from ui.navigation import entry_guard
from ui.texts import DEMO_LABEL, NOT_CLINICAL, SYNTHETIC_NOTE

entry_guard(__file__)

st.title("Predict")
st.markdown("Upload chest X-rays (JPEG, PNG or DICOM) or pick one from the data set. Each chosen model gives its "
            "probability of pneumonia and its call at its own threshold; the heat map (Grad-CAM) shows which "
            "regions pushed the model towards that call. Uploads stay in memory and are never stored. "
            "Each image is first compared with the run's training X-rays (colour, blankness, layout and the "
            "model's own features); one unlike them gets a warning and no label, since any label for it "
            "would be meaningless.")
st.error(NOT_CLINICAL, icon=":material/medical_information:")
store = ui_runs.store()
finished = ui_runs.finished_or_stop(store, "No finished runs yet: a model must be trained before it can predict.")
ui_runs.predictor()  # starts the prediction process while the person picks a file; the page without runs starts none

cols = st.columns(2)
choice = cols[0].selectbox("Model", ["all", *finished], key="predict_run",
                           format_func=lambda k: f"All {len(finished)} finished runs" if k == "all" else k)
runs = finished if choice == "all" else {choice: finished[choice]}
if any(run.status.get("synthetic") for run in runs.values()):
    st.warning(f"Trained on the {DEMO_LABEL}. {SYNTHETIC_NOTE} Its calls on a real X-ray "
               "mean nothing.", icon=":material/science:")
source = cols[1].radio("Image", ["upload", "data set"], horizontal=True, key="predict_source",
                       format_func={"upload": "Upload files", "data set": "Pick from the data set"}.get)
files: list[tuple[str, bytes]] = []
if source == "upload":
    uploads = st.file_uploader("X-ray images; several at once for a batch", type=list(images.FILE_SUFFIXES),
                               accept_multiple_files=True, key="uploads", max_upload_size=200)
    files = inference.unique_names([(upload.name, upload.getvalue()) for upload in uploads or []])
else:
    scan, _ = data_sets.require()
    test, what = run_tables.held_out_images(list(runs.values()), scan.manifest)
    test = test.sort_values(["class_name", "path"])
    # The true class is part of the name, so the prediction can be checked against it.
    names = dict(zip(test["class_name"] + "/" + test["path"].map(os.path.basename), test["path"]))
    if not names:
        st.info("The chosen runs kept no test image in common: pick one run, or upload files.")
        st.stop()
    picked = st.selectbox(f"An image of {what} ({len(names)} images, none trained on)", list(names),
                          key="predict_pick")
    try:
        files = [(picked, images.read_file_bytes(names[picked]))]
    except images.ImageDecodeError as error:
        st.warning(f"{error}; the folder may have changed. Pick another image.")
if not files:
    st.info("Upload one or more X-ray images to get a prediction.")
    st.stop()

results, rows = {}, []
for name, content in files:
    for label, run in runs.items():
        try:
            result = ui_runs.analyse(run.run_id, store, content, name)
        except images.ImageDecodeError as error:
            st.error(str(error), icon=":material/broken_image:")
            rows.append(inference.batch_row(name, error=str(error)))
            break  # the file is unusable for every model
        except UserError as error:  # this run's model cannot be used (say, a missing or unsafe file)
            st.error(f"{label}: {error}")
            continue
        results.setdefault(name, {})[label] = result
        rows.append(inference.batch_row(name, label, result))
if not results:
    st.stop()

if len(files) > 1:
    st.header("Batch results")
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, placeholder="–", column_config={
        "probability": st.column_config.NumberColumn("P(pneumonia)", format="%.3f"),
        "threshold": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download results (CSV)", table.to_csv(index=False), "predictions.csv", "text/csv",
                       icon=":material/download:")
shown = next(iter(results))
if len(results) > 1:
    shown = st.selectbox("Show details of", list(results), key="predict_detail")

st.header(shown)
content = dict(files)[shown]
gray = images.decode_image(content, shown)
alpha = st.slider("Heat map opacity", 0.0, 1.0, 0.4, 0.05, key="alpha",
                  help="0 shows the X-ray alone; 1 shows the heat map alone. Red is where the evidence was strongest.")
grid = st.columns(min(len(results[shown]) + 1, 4))
base = images.preprocess(gray, 512)  # the model's view (padded square), at a size a browser shows quickly
grid[0].image(base, caption=f"{shown} ({gray.shape[1]}×{gray.shape[0]} px)", width="stretch")
for i, (label, result) in enumerate(results[shown].items(), start=1):
    with grid[i % len(grid)]:
        if result["in_distribution"] is False:
            st.metric(label, inference.shown_label(result), help=f"Model {result['model']}")
            st.error(f"Not like this run's training X-rays: {result['warning']}. The model would have said "
                     f"{result['label']} (P(pneumonia) {result['probability']:.3f}); do not trust that.",
                     icon=":material/block:")
        else:
            st.metric(label, result["label"], help=f"Model {result['model']}")
            st.markdown(f"P(pneumonia) **{result['probability']:.3f}** against this run's threshold "
                        f"{result['threshold']:.3f}")
            if result["in_distribution"] is None:
                st.caption("This run was trained before the out-of-distribution check: nothing tells whether "
                           "this image is like its training X-rays. Retrain it to get the check.")
        if result["heatmap"] is None:
            st.caption(f"No heat map: {result['heatmap_error']}")
        else:
            st.image(heatmap.heatmap_image(gray, result["heatmap"], alpha), width="stretch",
                     caption=f"Grad-CAM: evidence for {result['label']}")
st.caption("Heat map colours run from blue (little evidence) to red (the strongest evidence). "
           "A heat map on the image's edges, labels or text markers means the model learnt a shortcut rather "
           "than lung findings: a reason to distrust it.")
