"""The Train page's "Import a model" control: a teacher stores an outside Keras model as a run.

The upload is written to a private temp file and handed to `python -m cxr_core import-model` in a
child process: loading a model imports TensorFlow, which the dashboard's server never does. The
command's one-line error (a Lambda layer, a truncated file, a wrong shape) is shown as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import streamlit as st

from cxr_core.config import PROJECT_ROOT
from ui import teacher

MAX_MB = 500  # also server.maxUploadSize: the Predict page's X-ray uploader keeps its own, smaller limit


def import_command(path: str, name: str, runs_root: str, declared: dict) -> list[str]:
    """The `import-model` command line for an uploaded file and the page's declared input handling."""
    command = [sys.executable, "-m", "cxr_core", "import-model", path, "--name", name, "--runs", runs_root,
               "--scale", declared["scale"], "--output", declared["output"], "--classes", declared["classes"],
               "--threshold", str(declared["threshold"])]
    if declared.get("image_size"):
        command += ["--image-size", str(declared["image_size"])]
    if declared.get("channels"):
        command += ["--channels", str(declared["channels"])]
    return command


def run_import(content: bytes, file_name: str, name: str, runs_root: str, declared: dict) -> tuple[bool, str]:
    """(stored?, the run id or the one-line error), the upload never left in the temp folder."""
    # The original name, made safe for a path: the run records it beside the file's sha256.
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in Path(file_name).name).lstrip(".")
    folder = tempfile.mkdtemp(prefix="cxr-import-")
    path = os.path.join(folder, safe or "upload.keras")
    try:
        with open(path, "wb") as handle:
            handle.write(content)
        done = subprocess.run(import_command(path, name, runs_root, declared), cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=900)
    finally:
        for leftover in Path(folder).iterdir():
            leftover.unlink()
        os.rmdir(folder)
    if done.returncode == 0:
        return True, done.stdout.strip().splitlines()[-1]
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    return False, (lines[-1] if lines else (done.stderr.strip().splitlines() or ["the import failed"])[-1])


def import_form(runs_root: str) -> None:
    with st.expander("Import a model (a .keras or .h5 file trained elsewhere)", icon=":material/upload_file:"):
        st.caption("It becomes a run: score it on a labelled folder (Compare's \"Score these runs\"), compare it "
                   "beside ours, predict with it. Declare what the file cannot say. A SavedModel folder imports "
                   "from the command line: `python -m cxr_core import-model FOLDER --name NAME`.")
        may_import = teacher.allowed("import models")
        upload = st.file_uploader("Model file", type=["keras", "h5"], max_upload_size=MAX_MB, key="import_upload",
                                  disabled=not may_import)
        cols = st.columns(3)
        declared = {
            "image_size": cols[0].number_input("Image size (0: the model's)", 0, 1024, 0, key="import_size"),
            "channels": cols[1].selectbox("Channels", [0, 1, 3], format_func=lambda c: str(c) if c else "the model's",
                                          key="import_channels"),
            "scale": cols[2].selectbox("Input range", ["0-255", "0-1"], key="import_scale",
                                       help="0-255 when the model rescales inside (the Keras tutorial's), else 0-1"),
        }
        cols = st.columns(3)
        declared["output"] = cols[0].selectbox("Output", ["sigmoid", "logits2", "probs2"], key="import_output",
                                               help="one sigmoid, two logits, or two probabilities")
        declared["classes"] = cols[1].selectbox("Class order", ["NORMAL,PNEUMONIA", "PNEUMONIA,NORMAL"],
                                                key="import_classes")
        declared["threshold"] = cols[2].number_input("Threshold", 0.01, 0.99, 0.5, key="import_threshold")
        name = st.text_input("Name", "my_model", key="import_name")
        if st.button("Import", icon=":material/upload:", disabled=not (upload and may_import)) and may_import:
            with st.spinner("Loading the model safely and checking it on a test image..."):
                stored, answer = run_import(upload.getvalue(), upload.name, name, runs_root, declared)
            (st.success if stored else st.error)(f"Imported as run {answer}." if stored else answer)
