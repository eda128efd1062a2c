"""Reading a model file from outside safely: what it is, its hash, and its model without running its code.

    fmt = model_format(path)          # "keras", "h5" or "savedmodel"; UserError for anything else
    model = read_model(path, fmt)     # a Lambda layer is refused before anything is deserialised

A `.keras` file is a zip whose config.json describes the layers; an `.h5` file holds the same
description in its model_config attribute. Both are read as text first, and a Lambda layer (Python
bytecode) is refused there; the load itself then runs with Keras' safe_mode=True.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from .config import UserError

FIX = "pass a model saved with model.save(...) as .keras, .h5 or a SavedModel folder"


def sha256_of(path: Path) -> str:
    """The file's sha256, or for a SavedModel folder the hash of its files' names and contents."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_format(path: Path) -> str:
    """"keras", "h5" or "savedmodel", from what the path is; UserError for anything else."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise UserError(f"{path} is a folder without saved_model.pb: not a SavedModel; {FIX}")
    if not path.is_file():
        raise UserError(f"{path}: no such file; {FIX}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if path.suffix.lower() == ".keras" and head.startswith(b"PK"):
        return "keras"
    if path.suffix.lower() in (".h5", ".hdf5") and head == b"\x89HDF\r\n\x1a\n":
        return "h5"
    raise UserError(f"{path.name} is not a Keras model file (its bytes are not a {path.suffix or 'model'} "
                    f"file's); {FIX}")


def _model_config(path: Path, fmt: str) -> str:
    """The model's architecture as JSON text, read without deserialising any layer."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as archive:
                return archive.read("config.json").decode("utf-8")
        import h5py

        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise UserError(f"{path.name} is damaged or truncated ({type(error).__name__}); {FIX}") from None
    if config is None:
        raise UserError(f"{path.name} holds weights only, no model; save the whole model with model.save(...)")
    return config.decode("utf-8") if isinstance(config, bytes) else str(config)


def _refuse_code(config_text: str, name: str) -> None:
    """A Lambda layer (or a function-valued config) carries Python to run: refused, never loaded."""
    try:
        config = json.loads(config_text)
    except ValueError:
        raise UserError(f"{name}: its model configuration is not readable JSON; {FIX}") from None
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") in ("Lambda", "__lambda__", "function"):
                raise UserError(f"{name} holds a Lambda layer (Python code inside the model), which is never run "
                                "here; rebuild the model from standard Keras layers and save it again")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def read_model(path: Path, fmt: str):
    """The Keras model in a `.keras` or `.h5` file, loaded safely; UserError in one line otherwise."""
    import keras

    _refuse_code(_model_config(path, fmt), path.name)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for bad or foreign files
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{path.name} cannot be loaded as a Keras model ({type(error).__name__}: {first}); "
                        f"{FIX}") from None
