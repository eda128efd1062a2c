"""Scan a Kaggle-layout folder into a manifest and split it by patient.

    ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg    (any case; only train/ is required)

Kaggle's archive nests `chest_xray/chest_xray/` and carries `__MACOSX/` and
`.DS_Store`: both are tolerated. The manifest is a pandas DataFrame with one
row per image: path, source_split, label, class_name, patient_id, kind.

Splits are by patient: the same child often has several pneumonia images, and
a random image-level split would put them on both sides (leakage).

    python -m cxr_core info --data ../shared/data/chest_xray
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .config import CLASSES, UserError
from .images import FILE_SUFFIXES

SPLITS = ("train", "val", "test")
# One row per image, as scan_folder finds it.
MANIFEST_COLUMNS = ["path", "source_split", "label", "class_name", "patient_id", "kind"]
# The official val split has 16 images: far too few to pick a threshold or stop early on.
MIN_OFFICIAL_VAL = 100
MACOS_JUNK = "__MACOSX"

_PNEUMONIA_NAME = re.compile(r"(person\d+)_(bacteria|virus)", re.IGNORECASE)
_NORMAL_NAME = re.compile(r"((?:NORMAL2-)?IM-\d+)", re.IGNORECASE)


@dataclass
class Scan:
    root: Path
    manifest: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    synthetic: bool = False


def parse_name(file_name: str, label: int) -> tuple[str, str]:
    """(patient_id, kind) from a Kaggle file name; unknown names are their own patient."""
    stem = Path(file_name).stem
    match = _PNEUMONIA_NAME.search(stem)
    if match:
        return match.group(1).lower(), match.group(2).lower()
    match = _NORMAL_NAME.search(stem)
    if match:
        return match.group(1).upper(), "none" if label == 0 else "unknown"
    return stem, "none" if label == 0 else "unknown"


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop
        return False


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder, followlinks=False))


def _child(folder: Path, name: str) -> Path | None:
    """A sub-folder by case-insensitive name."""
    try:
        for entry in os.scandir(folder):
            if entry.name.lower() == name.lower() and _is_dir(entry):
                return Path(entry.path)
    except OSError:
        return None
    return None


def resolve_root(path: str | os.PathLike, *, require_train: bool = True) -> Path:
    """The folder that holds train/, descending through Kaggle's `chest_xray/` nesting.

    With require_train=False a folder that holds only test/ (a withheld test set
    to evaluate a run on), or only NORMAL/ and PNEUMONIA/, is accepted too.
    """
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise UserError(f"data folder {root} does not exist; pass --data with the folder that holds train/ (or set CXR_DATA_DIR)")
    if root.is_file():
        if zipfile.is_zipfile(root):
            raise UserError(
                f"{root} is a zip archive; extract it first (python -m zipfile -e {root.name} DEST) "
                "and point --data at the extracted chest_xray folder"
            )
        raise UserError(f"{root} is a file, not a folder; pass the folder that holds train/NORMAL and train/PNEUMONIA")
    wanted = ("train",) if require_train else ("train", "test", *CLASSES)
    candidate = root
    for _ in range(3):
        if any(_child(candidate, name) is not None for name in wanted):
            return candidate
        nested = _child(candidate, "chest_xray")
        if nested is None:
            break
        candidate = nested
    zips = sorted(p.name for p in root.glob("*.zip"))
    hint = f" It holds {', '.join(zips)}: extract it there first." if zips else ""
    if not require_train:
        raise UserError(f"no test/, train/ or NORMAL/ and PNEUMONIA/ folders in {root}; point --data at a labelled "
                        f"folder: ROOT/test/{{NORMAL,PNEUMONIA}}/*.jpeg or ROOT/{{NORMAL,PNEUMONIA}}/*.jpeg.{hint}")
    raise UserError(
        f"no train/ folder in {root}; expected the Kaggle layout ROOT/train/{{NORMAL,PNEUMONIA}}/*.jpeg.{hint}"
    )


def split_folders(root: Path) -> dict[str, Path]:
    """split name -> folder. A folder of bare class folders (NORMAL/, PNEUMONIA/) is one labelled
    set: it counts as a test split, the only use such a folder has here."""
    found = {split: folder for split in SPLITS if (folder := _child(root, split)) is not None}
    if not found and any(_child(root, name) is not None for name in CLASSES):
        found["test"] = root
    return found


def scan_folder(path: str | os.PathLike, *, require_train: bool = True) -> Scan:
    """Walk ROOT/{train,val,test}/{NORMAL,PNEUMONIA}; count what is skipped and why."""
    from .demo import is_synthetic

    root = resolve_root(path, require_train=require_train)
    skipped = _Skipped()
    _skip_macos_metadata_above(root, Path(path).expanduser().absolute(), skipped)
    rows = [row for split, split_dir in split_folders(root).items() for row in _scan_split(split, split_dir, skipped)]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    _require_images(manifest, root, require_train)
    return Scan(root=root, manifest=manifest, skipped=dict(skipped), synthetic=is_synthetic(root))


class _Skipped(dict):
    """What a scan left out: reason -> count."""

    def add(self, reason: str, count: int = 1) -> None:
        if count:
            self[reason] = self.get(reason, 0) + count

    def junk(self, folder: Path, dirs: list[str], files: list[str]) -> None:
        """Count what sits beside the expected folders: macOS metadata, hidden and stray entries."""
        for name in dirs:
            if name == MACOS_JUNK:
                self.add("macOS metadata file (__MACOSX)", _count_files(folder / name))
            elif name.startswith("."):
                self.add("hidden folder")
        for name in files:
            if name.startswith("."):
                self.add("hidden file")
            else:
                self.add("image outside NORMAL/ and PNEUMONIA/" if Path(name).suffix.lower() in FILE_SUFFIXES
                         else "not an image file")


def _skip_macos_metadata_above(root: Path, given: Path, skipped: _Skipped) -> None:
    """Kaggle's archive puts __MACOSX beside the data, at any level from the data root up to the folder given."""
    level = root
    for _ in range(4):
        if _child(level, MACOS_JUNK) is not None:
            skipped.add("macOS metadata file (__MACOSX)", _count_files(level / MACOS_JUNK))
        if level == given or level.parent == level:
            break
        level = level.parent


def _scan_split(split: str, split_dir: Path, skipped: _Skipped) -> list[dict]:
    """The manifest rows of one split folder's NORMAL/ and PNEUMONIA/; strays beside them are counted."""
    try:
        entries = list(os.scandir(split_dir))
    except OSError:
        entries = []
    expected = {c.lower() for c in CLASSES}
    skipped.junk(split_dir,
                 [e.name for e in entries if _is_dir(e) and e.name.lower() not in expected and
                  (e.name == MACOS_JUNK or e.name.startswith("."))],
                 [e.name for e in entries if not _is_dir(e)])
    rows = []
    for label, class_name in enumerate(CLASSES):
        class_dir = _child(split_dir, class_name)
        if class_dir is not None:
            rows += _scan_class(class_dir, split, label, skipped)
    return rows


def _scan_class(class_dir: Path, split: str, label: int, skipped: _Skipped) -> list[dict]:
    rows = []
    # followlinks=False: a symlink loop inside a class folder cannot hang the scan.
    for folder, dirs, files in os.walk(class_dir, followlinks=False):
        skipped.junk(Path(folder), [d for d in dirs if d.startswith(".") or d == MACOS_JUNK], [])
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != MACOS_JUNK]
        for name in sorted(files):
            if name.startswith("."):
                skipped.add("hidden file")
            elif Path(name).suffix.lower() not in FILE_SUFFIXES:
                skipped.add("not an image file")
            elif not (Path(folder) / name).is_file():
                skipped.add("broken link")
            else:
                patient_id, kind = parse_name(name, label)
                rows.append({"path": str(Path(folder) / name), "source_split": split, "label": label,
                             "class_name": CLASSES[label], "patient_id": patient_id, "kind": kind})
    return rows


def _require_images(manifest: pd.DataFrame, root: Path, require_train: bool) -> None:
    """UserError for a scan that found no images, or (to train) a train split without both classes."""
    if manifest.empty:
        where = "train/NORMAL or train/PNEUMONIA" if require_train else "its NORMAL/ or PNEUMONIA/ folders"
        raise UserError(f"no images found under {root} ({where})")
    if not require_train:
        return
    train_classes = set(manifest.loc[manifest.source_split == "train", "label"])
    if len(train_classes) < 2:
        missing = [c for i, c in enumerate(CLASSES) if i not in train_classes]
        raise UserError(f"{root}/train has no {', '.join(missing)} images; both classes are needed to train")


def _carve(pool: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `pool` into (rest, carved) by patient, stratified by label."""
    n_splits = max(2, int(round(1.0 / fraction)))
    if pool["patient_id"].nunique() < n_splits:
        raise UserError(f"too few patients ({pool['patient_id'].nunique()}) to carve a {fraction:.0%} split by patient")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest_idx, carved_idx = next(folds.split(pool, pool["label"], groups=pool["patient_id"]))
    return pool.iloc[rest_idx], pool.iloc[carved_idx]


def assign_splits(manifest: pd.DataFrame, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 42) -> pd.DataFrame:
    """Add a `split` column (train/val/test), by patient, deterministic for a seed.

    The official test/ is kept as it is. A missing test/ is carved from train.
    A missing or tiny val/ (the official one has 16 images) goes back into the
    pool, and validation is carved from it.
    """
    df = manifest.copy()
    has_test = (df.source_split == "test").any()
    val_count = int((df.source_split == "val").sum())
    use_official_val = val_count >= MIN_OFFICIAL_VAL
    pool_splits = ["train"] + ([] if use_official_val else ["val"])
    pool = df[df.source_split.isin(pool_splits)]
    df["split"] = df["source_split"]
    if not has_test:
        pool, test = _carve(pool, test_fraction, seed)
        df.loc[test.index, "split"] = "test"
    if not use_official_val:
        remaining = 1.0 - (0.0 if has_test else test_fraction)
        pool, val = _carve(pool, val_fraction / remaining, seed + 1)
        df.loc[val.index, "split"] = "val"
    df.loc[pool.index, "split"] = "train"
    return df


def patient_overlap(split_manifest: pd.DataFrame) -> dict[str, int]:
    """Patients present in two splits (the leakage check); all zeros is the goal."""
    groups = {s: set(split_manifest.loc[split_manifest.split == s, "patient_id"]) for s in SPLITS}
    return {f"{a}/{b}": len(groups[a] & groups[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}


OVERLAP_UNCERTAIN = (
    "IDs shared between separately numbered official folders: Kermany's train and test folders appear to have "
    "been numbered apart (person100 is a virus case in train and a bacteria case in test), so a shared ID there "
    "may be a naming artefact rather than the same child. Whether any child is in both is not known from the "
    "file names; the check is exact only for splits carved here, which share one numbering.")


def leakage_report(split_manifest: pd.DataFrame) -> list[dict]:
    """The leakage check per pair of splits, with what a shared patient ID can mean there.

    A pair is `exact` when both splits draw on the same official folders (a split
    carved from train by patient shares train's numbering): a shared ID is then
    the same child, i.e. leakage. Between separately numbered official folders
    (the official train and test) a shared ID proves nothing either way.
    """
    overlap = patient_overlap(split_manifest)
    sources = {s: frozenset(split_manifest.loc[split_manifest.split == s, "source_split"]) for s in SPLITS}
    rows = []
    for pair, shared in overlap.items():
        a, b = pair.split("/")
        exact = sources[a] == sources[b] or not sources[a] or not sources[b]
        verdict = ("no patient in both" if shared == 0 else
                   f"{shared} patients in both: leakage" if exact else
                   f"{shared} IDs in common between separately numbered official folders: possibly a naming artefact")
        rows.append({"pair": pair, "shared_ids": shared, "exact": exact, "leakage": bool(shared and exact),
                     "verdict": verdict})
    return rows


def split_summary(split_manifest: pd.DataFrame) -> pd.DataFrame:
    """Images and patients per split and class: what `info` prints and the Dataset page charts."""
    table = (
        split_manifest.groupby(["split", "class_name"])
        .agg(images=("path", "size"), patients=("patient_id", "nunique"))
        .reset_index()
    )
    order = {s: i for i, s in enumerate(SPLITS)}
    def by_split_order(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "split" else column

    return table.sort_values(["split", "class_name"], key=by_split_order).reset_index(drop=True)


def fingerprint(paths: list[str], image_size: int, extra: str = "") -> str:
    """A short key for a list of files as they are now (names, sizes, mtimes)."""
    digest = hashlib.sha256(f"{image_size}|{extra}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{p}|missing\n".encode())
    return digest.hexdigest()[:16]


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the mean weight per image is 1."""
    counts = np.bincount(labels.astype(int), minlength=2).astype(float)
    counts[counts == 0] = 1.0
    total = counts.sum()
    return {i: float(total / (2.0 * counts[i])) for i in range(2)}


def shared_images(paths, others) -> list[str]:
    """The files of `paths` whose bytes equal a file of `others` (same image under any name or folder)."""
    import hashlib

    def digest(path) -> str:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()

    theirs = {digest(p) for p in others}
    return [str(p) for p in paths if digest(p) in theirs]


def shared_patients(manifest: pd.DataFrame, other: pd.DataFrame) -> list[str]:
    """Patients with images in both manifests, by the id their file names carry (`personN`, `IM-NNNN`,
    `NORMAL2-IM-NNNN`; another name is its own patient, so a re-encoded copy under the same name counts).
    Another image of the same child, or the same image re-encoded, leaks its answer as surely as a copy."""
    return sorted(set(manifest["patient_id"]) & set(other["patient_id"]))
