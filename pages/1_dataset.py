"""Dataset explorer: counts, imbalance, patients, sample images, sizes and what each class looks like."""

import streamlit as st

from cxr_core import data, explore, figures
from cxr_core.config import CLASSES
from ui import data_sets
from ui.navigation import entry_guard

entry_guard(__file__)


@st.cache_data(max_entries=32, show_spinner=False)
def gallery(root: str, split, class_name, kind, n: int, seed: int):
    return explore.sample_gallery(data_sets.load_split(root)[1], split=split, class_name=class_name,
                                  kind=kind, n=n, seed=seed)


@st.cache_data(max_entries=8, show_spinner="Reading image headers...")
def sizes(root: str):
    return explore.image_size_table(data_sets.load_split(root)[0].manifest, n=300)


@st.cache_data(max_entries=8, show_spinner="Averaging images per class...")
def appearance(root: str):
    return explore.class_appearance(data_sets.load_split(root)[0].manifest, per_class=80, image_size=128)


st.title("Dataset explorer")
st.markdown("What the models learn from, and the traps in it: the classes are imbalanced, the official "
            "validation folder is tiny, and many children have several X-rays, so splits must go by patient.")
scan, split = data_sets.require()
root = str(scan.root)
data_sets.caption(scan)

st.header("Counts per split and class")
balance = explore.class_balance(split)
overall = balance[balance["split"] == "all"].iloc[0]
cols = st.columns(3)
cols[0].metric("PNEUMONIA : NORMAL", f"{overall['PNEUMONIA'] / max(overall['NORMAL'], 1):.1f} : 1")
cols[1].metric("Accuracy of always answering PNEUMONIA", f"{overall['always_pneumonia_accuracy']:.1%}",
               help="A model that ignores the image scores this: the bar any model must clear.")
cols[2].metric("Patients", f"{int(overall['patients']):,}")
st.plotly_chart(figures.counts_figure(data.split_summary(split)), key="counts")
st.caption("Splits as training makes them (seed 42): the official test folder is kept, and validation is "
           "carved from train by patient, stratified by class. Missing folders are carved the same way.")
st.dataframe(balance, hide_index=True, column_config={
    "always_pneumonia_accuracy": st.column_config.NumberColumn("always-PNEUMONIA accuracy", format="%.3f"),
    "majority_accuracy": st.column_config.NumberColumn("majority-class accuracy", format="%.3f")})

st.header("Patients and leakage")
st.markdown("A child with pneumonia often has several X-rays. If one lands in train and another in test, the "
            "test score measures memory of that child, not skill: that is leakage.")
left, right = st.columns(2)
left.plotly_chart(figures.per_patient_figure(explore.images_per_patient(split)), key="per_patient")
show = {explore.LEAKAGE: right.error, explore.PASSED: right.success, explore.NOTE: right.info}
for severity, sentence in explore.leakage_findings(data.leakage_report(split), explore.naive_split_leakage(scan.manifest)):
    show[severity](sentence)

st.header("Sample images")
filters = st.columns([1, 1, 1, 1, 1])
split_choice = filters[0].selectbox("Split", ["any", "train", "val", "test"], key="gallery_split")
class_choice = filters[1].selectbox("Class", ["any", *CLASSES], key="gallery_class")
kind_choice = filters[2].selectbox("Infection kind", ["any", "bacteria", "virus"], key="gallery_kind",
                                   help="From the file name; NORMAL images have none.")
count = filters[3].select_slider("Images", [6, 12, 18, 24], value=12, key="gallery_n")
if filters[4].button("New random sample", icon=":material/shuffle:"):
    st.session_state["gallery_seed"] = st.session_state.get("gallery_seed", 0) + 1
sample = gallery(root, None if split_choice == "any" else split_choice, None if class_choice == "any" else class_choice,
                 None if kind_choice == "any" else kind_choice, count, st.session_state.get("gallery_seed", 0))
if sample.empty:
    st.info("No images match these filters (NORMAL images have no infection kind). Widen a filter.")
data_sets.thumbnail_grid(
    (row["path"], f"{row['file_name']} · " + (f"{row['width']:.0f}×{row['height']:.0f} px · "
                                              if row["width"] == row["width"] else "")
     + f"{row['file_kb']:.0f} KB · {row['class_name']} ({row['split']})") for _, row in sample.iterrows())

st.header("Image sizes and shapes")
st.markdown("Real downloads range from about 400 to 3000 pixels a side with varied aspect ratios; every image "
            "is padded to a square (aspect kept) and resized before a model sees it.")
table = sizes(root)
if table.empty:
    st.info("No image headers could be read.")
elif table[["width", "height"]].nunique().max() == 1:
    st.info(f"All {len(table)} sampled images are {table['width'].iloc[0]}×{table['height'].iloc[0]} pixels: "
            "this copy was resized to one size (the demo set and the shared copy are).")
else:
    left, right = st.columns(2)
    left.plotly_chart(figures.sizes_figure(table), key="sizes")
    right.plotly_chart(figures.aspect_figure(table), key="aspect")
    st.caption(f"From the headers of {len(table)} randomly chosen images.")

st.header("What each class looks like on average")
st.markdown("The mean image shows what is common to a class; the histogram shows how bright its pixels are. "
            "If the classes differed in brightness alone, a model could cheat by learning exposure.")
looks = appearance(root)
cols = st.columns([1, 1, 2])
for col, class_name in zip(cols, CLASSES):
    col.image(looks[class_name].mean_image, caption=f"mean {class_name} image ({looks[class_name].images} images)",
              width=256)
cols[2].plotly_chart(figures.intensity_figure(looks), key="histogram")
