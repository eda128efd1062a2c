"""What the speed sections share: scratch folders, the patient split, the seed's loader, the run context.

Not a script; `benchmarks/speed.py` and its section modules import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import common
from cxr_core import data as data_mod
from cxr_core import registry
from cxr_core.config import CLASSES
from cxr_core.registry import default_settings

ENTRY = common.PROJECT_ROOT / "benchmarks" / "speed.py"
DEFAULT_TEST_DATA = common.DEFAULT_TEST_DATA
# The input pipeline section compares our loader with the one the study's Keras tutorial uses, at the
# study recipe's size and batch (registry: `train --recipe study`).
SEED_LOADER = {"image_size": 180, "batch_size": 32, "color": "rgb"}
BATCH = 32


@contextlib.contextmanager
def env_vars(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def child_command(name: str, spec: dict) -> list[str]:
    """A child of the entry script (speed.py --child NAME): a fresh interpreter, as a person's run would be."""
    return [sys.executable, str(ENTRY), "--child", name, "--child-spec", json.dumps(spec)]


def limited_copy(data: Path, limit: int, out: Path, seed: int) -> Path:
    """A Kaggle-layout folder of symlinks to `limit` train images, whole patients, both classes in proportion."""
    manifest = data_mod.scan_folder(data).manifest
    manifest = manifest[manifest.source_split == "train"]
    rng = np.random.default_rng(seed)
    chosen = []
    for label, group in manifest.groupby("label"):
        quota = round(limit * len(group) / len(manifest))
        patients = rng.permutation(group["patient_id"].unique())
        taken = 0
        for patient in patients:
            if taken >= quota:
                break
            rows = group[group.patient_id == patient]
            chosen.append(rows)
            taken += len(rows)
    root = fresh(out)
    for _, row in pd.concat(chosen).iterrows():
        folder = root / "train" / row.class_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(row.path).name).symlink_to(row.path)
    return root


def patient_split(data: Path):
    """cxr_core's split, exactly as `python -m cxr_core train` makes it for regularized_cnn."""
    s = default_settings(registry.DEFAULT_MODEL)
    scan = data_mod.scan_folder(data)
    return data_mod.assign_splits(scan.manifest, val_fraction=s.val_fraction, test_fraction=s.test_fraction, seed=s.seed)


def split_link_folders(split, out: Path) -> dict[str, Path]:
    """out/{train,val}/{NORMAL,PNEUMONIA}/ of symlinks: the patient split, in the layout the seed's loader reads."""
    fresh(out)
    for name in ("train", "val"):
        for cls in CLASSES:
            (out / name / cls).mkdir(parents=True)
        for i, row in enumerate(split[split.split == name].itertuples()):
            target = out / name / row.class_name / Path(row.path).name
            if target.exists() or target.is_symlink():
                target = target.with_name(f"{i}_{target.name}")
            target.symlink_to(row.path)
    return {name: out / name for name in ("train", "val")}


def warm_page_cache(paths) -> None:
    """Read every file once, so neither loader pays the first disk read the other one paid."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def seed_dataset(folder: Path, shuffle: bool, seed: int = 42):
    """The seed's loader: keras.utils.image_dataset_from_directory at 180x180 RGB, batch 32."""
    import keras

    return keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="binary", class_names=list(CLASSES), color_mode="rgb",
        image_size=(SEED_LOADER["image_size"],) * 2, batch_size=SEED_LOADER["batch_size"], shuffle=shuffle,
        seed=seed, verbose=False)


class Context:
    """One benchmark invocation: its arguments, data folders, scratch folder and what sections hand on."""

    def __init__(self, args, data: Path, work: Path):
        self.args, self.data, self.work = args, data, work
        self.split = patient_split(data)
        self.page_store = None
        self.training_peak = None
        self.previous: dict = {}  # the sections of the stored results, before this run replaces them
        self._links = None

    def links(self) -> dict[str, Path]:
        if self._links is None:
            self._links = split_link_folders(self.split, self.work / "split-links")
        return self._links
