"""Read: every student reads the same X-rays and sees where they stand beside the model; the class view
puts the whole room on one ROC plot (open it on the projector: ?view=class). Answering needs no key."""

import streamlit as st

from cxr_core import reads
from ui import reading
from ui import runs as ui_runs
from ui.navigation import entry_guard

entry_guard(__file__)
st.title("Read")
st.markdown("Be the reader. Studies of such models compare them with radiologists reading the same images and "
            "draw each reader as a point beside the model's ROC curve. Here the class does the reading.")
st.caption("Not for clinical use. Teaching and research only.")

store = ui_runs.store()
sets = reads.list_sets(store)
chosen = reading.choose_set(store, sets)
reading.teacher_panel(store, chosen)
if chosen is None:
    st.info("No reading set yet. The teacher draws one above (Reading sets), or from a terminal: "
            "`python -m cxr_core reads new --images 20 --seed 7`.")
    st.stop()
if chosen.get("synthetic"):
    st.warning("This set is drawn from the SYNTHETIC demo data set: drawn shapes, not X-rays of any person.",
               icon=":material/science:")

views = (reading.READ, reading.CLASS_VIEW)
asked = reading.CLASS_VIEW if st.query_params.get("view") == "class" else reading.READ
view = st.segmented_control("View", views, default=asked, key="read_view", required=True)
wanted = "class" if view == reading.CLASS_VIEW else None
if st.query_params.get("view") != wanted:
    if wanted:
        st.query_params["view"] = wanted  # the projector's link opens the class view
    else:
        st.query_params.pop("view", None)
if view == reading.CLASS_VIEW:
    reading.class_view(str(store.root), chosen["id"])
else:
    reading.reader(store, chosen)
