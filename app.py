"""The chest X-ray pneumonia dashboard: a teaching and study tool over `cxr_core`.

    streamlit run app.py                         # the synthetic demo data set
    CXR_DATA_DIR=../shared/data/chest_xray streamlit run app.py

Not for clinical use.
"""

import streamlit as st

from cxr_core import explore
from cxr_core.config import shown_path
from cxr_core.store import ACTIVE_STATES, RunState
from ui import data_sets, navigation, teacher
from ui import home as ui_home
from ui import runs as ui_runs
from ui.texts import DEMO_LABEL, NOT_CLINICAL, SYNTHETIC_NOTE

st.set_page_config(page_title="Chest X-ray pneumonia study", page_icon=":material/pulmonology:", layout="wide")


def home() -> None:
    st.title("Chest X-ray pneumonia study")
    st.error(NOT_CLINICAL, icon=":material/medical_information:")
    st.markdown(
        "This dashboard teaches and studies how convolutional networks detect pneumonia on pediatric chest "
        "X-rays (the Kermany 2018 data set, known on Kaggle as *Chest X-Ray Images (Pneumonia)*). Browse the "
        "data and its traps, train the study's five models, compare them with honest uncertainty, and see "
        "where a model looks when it calls an X-ray PNEUMONIA.")

    scan, split = data_sets.require()
    ui_home.sample_row(scan, split)
    store = ui_runs.store()
    runs = store.list()
    st.subheader(ui_home.best_run_heading(scan.synthetic))
    ui_home.best_run_panel(store, runs, scan.root)

    st.subheader("Active data set")
    summary = explore.dataset_summary(scan)
    if summary["synthetic"]:
        st.warning(f"**{DEMO_LABEL}.** {SYNTHETIC_NOTE} Choose a real folder in the "
                   "sidebar when one is configured (CXR_DATA_DIR), or fetch the real data set (Kermany 2018, "
                   "CC BY 4.0) with the command below; its last line is the CXR_DATA_DIR setting to use.",
                   icon=":material/science:")
        st.code("python -m cxr_core download", language="bash")
    else:
        st.success(f"Real images from `{shown_path(summary['root'])}`.", icon=":material/folder_open:")
    cols = st.columns(4)
    cols[0].metric("Images", f"{summary['images']:,}")
    cols[1].metric("NORMAL", f"{summary['classes']['NORMAL']:,}")
    cols[2].metric("PNEUMONIA", f"{summary['classes']['PNEUMONIA']:,}")
    cols[3].metric("Patients", f"{summary['patients']:,}")
    folders = ", ".join(f"{name} {count:,}" for name, count in summary["official_splits"].items() if count)
    st.caption(f"Images per folder on disk: {folders}."
               + (f" Skipped: {', '.join(f'{n} {why}' for why, n in summary['skipped'].items())}."
                  if summary["skipped"] else ""))

    st.subheader("Runs")
    finished = [r for r in runs if r.state == RunState.DONE]
    active = [r for r in runs if r.state in ACTIVE_STATES]
    cols = st.columns(3)
    cols[0].metric("Runs", len(runs))
    cols[1].metric("Finished", len(finished))
    cols[2].metric("Training or queued", len(active), help="One job trains at a time; the rest wait in a queue.")
    if any(r.state == RunState.RUNNING for r in active):
        st.info("A model is training now; watch it on the Train page.")

    st.subheader("Where to start")
    st.page_link(lesson_page, label="Lesson: the study step by step, for a class (the step is in the URL)")
    st.page_link(read_page, label="Read: every student reads X-rays and lands beside the model on one ROC plot")
    st.page_link(dataset_page, label="Dataset: counts, imbalance, patients, sample images")
    st.page_link(train_page, label="Train: pick a model, launch it, watch it learn")
    st.page_link(compare_page, label="Compare: confusion matrices, ROC, thresholds, McNemar")
    st.page_link(predict_page, label="Predict: upload an X-ray and see where the model looked")


# Streamlit treats a pages/ folder as its old multipage layout until a session has called
# st.navigation; each page calls ui.navigation.entry_guard() so that a deep link opened first
# after a restart comes through this script instead of running the page without it.
dataset_page = st.Page("pages/1_dataset.py", title="Dataset", icon=":material/photo_library:", url_path="dataset")
train_page = st.Page("pages/2_train.py", title="Train", icon=":material/model_training:", url_path="train")
compare_page = st.Page("pages/3_compare.py", title="Compare", icon=":material/compare:", url_path="compare")
predict_page = st.Page("pages/4_predict.py", title="Predict", icon=":material/radiology:", url_path="predict")
lesson_page = st.Page("pages/5_lesson.py", title="Lesson", icon=":material/school:", url_path="lesson")
read_page = st.Page("pages/6_read.py", title="Read", icon=":material/visibility:", url_path="read")
page = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                      lesson_page, read_page, dataset_page, train_page, compare_page, predict_page])

data_sets.chooser()
teacher.sidebar()
st.sidebar.caption("Not for clinical use. Teaching and research only.")
st.session_state[navigation.ENTRY_FLAG] = True
asked_for, query = st.session_state.pop(navigation.DEEP_LINK, (None, None))
by_file = {"1_dataset.py": dataset_page, "2_train.py": train_page, "3_compare.py": compare_page,
           "4_predict.py": predict_page, "5_lesson.py": lesson_page, "6_read.py": read_page}
if asked_for in by_file:
    st.switch_page(by_file[asked_for], query_params=query or None)
page.run()
