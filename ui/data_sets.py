"""The data set a session works on: the sidebar chooser, its folder, its scan and split, thumbnails.

Scans and thumbnails are cached for every session (st.cache_data): a class
opening the same page reads each folder and decodes each file once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import streamlit as st
from PIL import Image

from cxr_core import config, data, demo, images
from cxr_core.config import UserError
from ui.texts import DEMO_LABEL, SYNTHETIC_NOTE


def sources() -> dict[str, Path | None]:
    """Label -> folder for every data set the server offers; None is the demo set.

    Only folders configured on the server (CXR_DATA_DIR, and CXR_DATA_ROOTS
    separated by os.pathsep) are offered: a browser cannot point the app at
    any other path on the server's disk.
    """
    roots = [config.configured_data_dir()]
    roots += config.extra_data_roots()
    offered: dict[str, Path | None] = {}
    for root in roots:
        if root is not None and str(root) not in {str(p) for p in offered.values()}:
            label = f"{root.name or root} ({config.shown_path(root)})"
            while label in offered:  # two folders outside home and project may show the same name
                label += " "
            offered[label] = root
    offered[DEMO_LABEL] = None
    return offered


def chooser() -> None:
    """The sidebar's data set selectbox; its choice is st.session_state["data_source"]."""
    st.sidebar.selectbox(
        "Data set", list(sources()), key="data_source",
        help="The folders configured on the server (CXR_DATA_DIR, CXR_DATA_ROOTS) and the synthetic demo set.")


@st.cache_resource(show_spinner="Generating the synthetic demo data set (once, a few seconds)...")
def _demo_dir(path: str) -> Path:
    return demo.ensure_demo_dataset(path)


def folder(label: str) -> Path:
    """The folder behind a label of sources(); the demo set is generated on first use."""
    path = sources().get(label)
    return path if path is not None else _demo_dir(str(config.demo_data_dir()))


def active_dir() -> Path:
    offered = sources()
    choice = st.session_state.get("data_source")
    return folder(choice if choice in offered else next(iter(offered)))


@st.cache_data(ttl=300, show_spinner="Scanning the data folder...")
def load_split(root: str, seed: int = 42):
    """(Scan, split manifest) of a folder, split by patient as training would with this seed."""
    scan = data.scan_folder(root)
    return scan, data.assign_splits(scan.manifest, seed=seed)


def require() -> tuple:
    """(Scan, split manifest) of the active data set, or a helpful message and the page stops."""
    try:
        return load_split(str(active_dir()))
    except UserError as error:
        st.warning(f"The chosen data set cannot be used. {error}")
        st.info("Choose the demo data set in the sidebar, or set CXR_DATA_DIR to a folder in the Kaggle "
                "layout (train/NORMAL, train/PNEUMONIA) and restart the app.")
        st.stop()


def caption(scan) -> None:
    if scan.synthetic:
        st.caption(f"Data: {DEMO_LABEL}. {SYNTHETIC_NOTE}")
    else:
        st.caption(f"Data: `{config.shown_path(scan.root)}` ({len(scan.manifest):,} images)")


def thumbnail(path: str, size: int = 192) -> bytes | None:
    """A file as the model sees it (padded square), as PNG bytes for st.image; None if it cannot be read.

    Encoded once, in the cache: st.image encodes an array again on every rerun of every session, which a
    classroom's page views pay for in server CPU."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _thumbnail(path, size, mtime)


@st.cache_data(max_entries=512, show_spinner=False)
def _thumbnail(path: str, size: int, mtime: int) -> bytes | None:
    try:
        pixels = images.load_for_model(path, size)[..., 0]
    except images.ImageDecodeError:
        return None
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def thumbnail_grid(items, columns: int = 6) -> None:
    """(path, caption) pairs as a grid of thumbnails; an unreadable file shows its caption as a warning."""
    grid = st.columns(columns)
    for i, (path, text) in enumerate(items):
        pixels = thumbnail(str(path))
        if pixels is None:
            grid[i % columns].warning(f"{text} (unreadable)")
        else:
            grid[i % columns].image(pixels, caption=text)
