"""Contracts of cxr_core.data: scanning Kaggle-layout folders (clean, nested, messy, broken),
file-name parsing, and the patient-grouped, stratified, seeded split."""

from __future__ import annotations

import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core import data, pipeline
from cxr_core.config import UserError
from cxr_core.registry import default_settings

MANIFEST_COLUMNS = ["path", "source_split", "label", "class_name", "patient_id", "kind"]


def touch_images(folder: Path, names) -> None:
    """Scanning reads names only: empty files with image names are enough."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def kaggle_tree(root: Path, splits=("train",), normal=3, pneumonia=3, *, case=str) -> Path:
    for split in splits:
        touch_images(root / case(split) / case("NORMAL"), [f"IM-{i:04d}-0001.jpeg" for i in range(normal)])
        touch_images(root / case(split) / case("PNEUMONIA"),
                     [f"person{i}_bacteria_{i}.jpeg" for i in range(pneumonia)])
    return root


def synthetic_manifest(seed: int = 0, n_normal: int = 300, n_pneumonia_patients: int = 220,
                       official: dict | None = None) -> pd.DataFrame:
    """A manifest shaped like the Kaggle set: 1 image per normal patient, 1-4 per pneumonia patient."""
    rng = np.random.default_rng(seed)
    rows = [{"path": f"/x/IM-{i:04d}-0001.jpeg", "label": 0, "class_name": "NORMAL",
             "patient_id": f"IM-{i:04d}", "kind": "none"} for i in range(n_normal)]
    for p in range(n_pneumonia_patients):
        for k in range(int(rng.integers(1, 5))):
            rows.append({"path": f"/x/person{p}_bacteria_{k}.jpeg", "label": 1, "class_name": "PNEUMONIA",
                         "patient_id": f"person{p}", "kind": "bacteria"})
    frame = pd.DataFrame(rows)
    frame["source_split"] = "train"
    for split, patients in (official or {}).items():
        frame.loc[frame.patient_id.isin(patients), "source_split"] = split
    return frame[MANIFEST_COLUMNS]


# --- scanning -------------------------------------------------------------------------------------


def test_scan_reads_any_case_and_all_official_splits(tmp_path):
    root = tmp_path / "data"
    kaggle_tree(root, splits=("train",), normal=2, pneumonia=3, case=str.capitalize)   # Train/Normal
    kaggle_tree(root, splits=("val",), normal=2, pneumonia=3, case=str.upper)          # VAL/NORMAL
    kaggle_tree(root, splits=("test",), normal=2, pneumonia=3, case=str.lower)         # test/normal
    scan = data.scan_folder(root)
    counts = scan.manifest.groupby(["source_split", "class_name"]).size().to_dict()
    assert counts == {(s, c): n for s in ("train", "val", "test") for c, n in (("NORMAL", 2), ("PNEUMONIA", 3))}
    assert scan.root == root.absolute()


def test_scan_lowercase_class_folders(tmp_path):
    root = tmp_path / "data"
    touch_images(root / "Train" / "normal", ["IM-0001-0001.jpeg", "IM-0002-0001.JPG"])
    touch_images(root / "Train" / "pneumonia", ["person1_virus_1.jpeg"])
    manifest = data.scan_folder(root).manifest
    assert sorted(manifest.class_name) == ["NORMAL", "NORMAL", "PNEUMONIA"]
    assert set(manifest.label[manifest.class_name == "PNEUMONIA"]) == {1}
    assert set(manifest.source_split) == {"train"}


def test_scan_descends_kaggle_nesting(tmp_path):
    download = tmp_path / "download"
    kaggle_tree(download / "chest_xray" / "chest_xray")
    for given in (download, download / "chest_xray", download / "chest_xray" / "chest_xray"):
        scan = data.scan_folder(given)
        assert scan.root == (download / "chest_xray" / "chest_xray").absolute()
        assert len(scan.manifest) == 6


def test_junk_is_skipped_and_counted(tmp_path):
    download = tmp_path / "download" / "chest_xray"
    root = kaggle_tree(download / "chest_xray", normal=2, pneumonia=2)
    # Kaggle's archive: a __MACOSX mirror beside the data, .DS_Store files, AppleDouble ._ files.
    touch_images(download / "__MACOSX" / "chest_xray" / "train" / "NORMAL", ["._IM-0000-0001.jpeg", "._IM-0001-0001.jpeg"])
    normal = root / "train" / "NORMAL"
    (normal / ".DS_Store").write_bytes(b"\0")
    (normal / "._IM-0000-0001.jpeg").write_bytes(b"\0")
    (normal / "readme.txt").write_text("notes")
    (normal / "Thumbs.db").write_bytes(b"\0")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    touch_images(normal / "__MACOSX", ["IM-0099-0001.jpeg"])
    touch_images(normal / ".hidden", ["IM-0098-0001.jpeg"])

    scan = data.scan_folder(download.parent)
    assert len(scan.manifest) == 4  # none of the junk became a row
    assert not scan.manifest.path.str.contains("__MACOSX|/\\.", regex=True).any()
    assert scan.skipped["macOS metadata file (__MACOSX)"] == 3
    assert scan.skipped["hidden file"] == 3
    assert scan.skipped["not an image file"] == 2
    assert scan.skipped["hidden folder"] == 1


def test_only_train_folder_is_valid(tmp_path):
    scan = data.scan_folder(kaggle_tree(tmp_path / "d", splits=("train",), normal=30, pneumonia=30))
    assert set(scan.manifest.source_split) == {"train"}
    # Both validation and test are carved from train, by patient.
    split = data.assign_splits(scan.manifest, seed=0)
    assert set(split.split) == {"train", "val", "test"}
    assert data.patient_overlap(split) == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_manifest_columns_and_values(demo_dir):
    manifest = data.scan_folder(demo_dir).manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in manifest.path)
    assert set(manifest.source_split) == {"train", "test"}
    assert (manifest.label == (manifest.class_name == "PNEUMONIA")).all()
    assert set(manifest.kind[manifest.label == 0]) == {"none"}
    assert set(manifest.kind[manifest.label == 1]) <= {"bacteria", "virus"}
    assert data.scan_folder(demo_dir).synthetic


@pytest.mark.parametrize("name,label,expected", [
    ("person1000_bacteria_2931.jpeg", 1, ("person1000", "bacteria")),
    ("person1_virus_6.jpeg", 1, ("person1", "virus")),
    ("PERSON12_Virus_33.JPEG", 1, ("person12", "virus")),
    ("IM-0115-0001.jpeg", 0, ("IM-0115", "none")),
    ("im-0115-0002.jpeg", 0, ("IM-0115", "none")),
    ("NORMAL2-IM-0381-0001.jpeg", 0, ("NORMAL2-IM-0381", "none")),
    ("scan_004.png", 1, ("scan_004", "unknown")),
    ("scan_004.png", 0, ("scan_004", "none")),
])
def test_parse_name(name, label, expected):
    assert data.parse_name(name, label) == expected


def test_parse_name_groups_a_patients_images():
    assert data.parse_name("person7_bacteria_1.jpeg", 1)[0] == data.parse_name("person7_bacteria_29.jpeg", 1)[0]
    assert data.parse_name("person7_bacteria_1.jpeg", 1)[0] != data.parse_name("person71_bacteria_1.jpeg", 1)[0]
    # NORMAL2 numbering is its own series: another child.
    assert data.parse_name("IM-0381-0001.jpeg", 0)[0] != data.parse_name("NORMAL2-IM-0381-0001.jpeg", 0)[0]


# --- splitting ------------------------------------------------------------------------------------


def patients_by_split(split: pd.DataFrame) -> dict[str, set]:
    return {s: set(split.patient_id[split.split == s]) for s in data.SPLITS}


def test_split_is_by_patient_and_stratified():
    manifest = synthetic_manifest()
    split = data.assign_splits(manifest, seed=42)
    assert set(split.split) == {"train", "val", "test"}
    assert data.patient_overlap(split) == {"train/val": 0, "train/test": 0, "val/test": 0}
    groups = patients_by_split(split)
    assert not (groups["train"] & groups["val"])
    assert not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    overall = manifest.label.mean()
    for name in ("train", "val", "test"):
        part = split[split.split == name]
        assert abs(part.label.mean() - overall) < 0.05, (name, part.label.mean(), overall)
    for name in ("val", "test"):  # both asked for 0.15
        share = (split.split == name).mean()
        assert 0.10 < share < 0.20, (name, share)
    # Every image keeps its row: nothing dropped, nothing duplicated.
    assert len(split) == len(manifest) and split.index.equals(manifest.index)


def test_split_is_deterministic_per_seed_and_differs_across_seeds():
    manifest = synthetic_manifest()
    a = data.assign_splits(manifest, seed=7)
    b = data.assign_splits(manifest.copy(), seed=7)
    c = data.assign_splits(manifest, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.split.equals(c.split)


def test_tiny_official_val_is_folded_back_into_the_pool():
    manifest = synthetic_manifest(official={"val": [f"IM-{i:04d}" for i in range(8)] + [f"person{i}" for i in range(4)]})
    official_val = manifest.source_split == "val"
    assert 0 < official_val.sum() < data.MIN_OFFICIAL_VAL
    split = data.assign_splits(manifest, seed=1)
    # Validation is carved from train + the tiny val, by patient: far more than the official few.
    assert (split.split == "val").sum() > 3 * official_val.sum()
    assert (split.split[official_val] == "train").any()  # the official val images joined the pool
    assert data.patient_overlap(split) == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_large_official_val_and_official_test_are_kept():
    val_patients = [f"IM-{i:04d}" for i in range(60)] + [f"person{i}" for i in range(40)]
    test_patients = [f"IM-{i:04d}" for i in range(60, 110)] + [f"person{i}" for i in range(40, 80)]
    manifest = synthetic_manifest(official={"val": val_patients, "test": test_patients})
    assert (manifest.source_split == "val").sum() >= data.MIN_OFFICIAL_VAL
    split = data.assign_splits(manifest, seed=3)
    pd.testing.assert_series_equal(split.split, split.source_split, check_names=False)


def test_official_test_is_kept_and_validation_carved_from_train():
    test_patients = [f"IM-{i:04d}" for i in range(50)] + [f"person{i}" for i in range(35)]
    manifest = synthetic_manifest(official={"test": test_patients})
    split = data.assign_splits(manifest, seed=5)
    assert (split.split[manifest.source_split == "test"] == "test").all()
    assert (split.split[manifest.source_split == "train"] != "test").all()
    assert (split.split == "val").sum() > 0


def test_demo_split_has_no_leak(demo_dir):
    scan = data.scan_folder(demo_dir)
    split = data.assign_splits(scan.manifest, seed=42)
    assert data.patient_overlap(split) == {"train/val": 0, "train/test": 0, "val/test": 0}
    summary = data.split_summary(split)
    assert summary.images.sum() == len(split)
    assert set(summary.split) == {"train", "val", "test"}


# --- bad folders ----------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        data.scan_folder(tmp_path / "nope")


def test_path_is_a_file(tmp_path):
    (tmp_path / "x.jpeg").write_bytes(b"")
    with pytest.raises(UserError, match="is a file, not a folder"):
        data.scan_folder(tmp_path / "x.jpeg")


def test_empty_folder(tmp_path):
    with pytest.raises(UserError, match="no train/ folder"):
        data.scan_folder(tmp_path)


def test_train_without_images(tmp_path):
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "train" / "PNEUMONIA").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        data.scan_folder(tmp_path)


@pytest.mark.parametrize("missing", ["NORMAL", "PNEUMONIA"])
def test_only_one_class(tmp_path, missing):
    kaggle_tree(tmp_path)
    shutil.rmtree(tmp_path / "train" / missing)
    with pytest.raises(UserError, match=f"no {missing} images"):
        data.scan_folder(tmp_path)


def test_kaggle_zip_not_extracted(tmp_path):
    archive = tmp_path / "chest-xray-pneumonia.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("chest_xray/train/NORMAL/IM-0001-0001.jpeg", b"")
    with pytest.raises(UserError, match="zip archive; extract it") as pointed_at_zip:
        data.scan_folder(archive)
    assert "python -m zipfile -e" in str(pointed_at_zip.value)
    with pytest.raises(UserError, match=r"chest-xray-pneumonia\.zip: extract it"):
        data.scan_folder(tmp_path)


def test_symlink_loops_do_not_hang_the_scan(tmp_path):
    root = kaggle_tree(tmp_path / "d")
    normal = root / "train" / "NORMAL"
    os.symlink("..", normal / "up")                      # a loop back to train/
    os.symlink(normal, normal / "self")                  # a loop to itself
    os.symlink("loop.jpeg", normal / "loop.jpeg")        # a link to itself, with an image name
    (normal / "deeper").mkdir()
    os.symlink(root, normal / "deeper" / "root")
    result = {}
    worker = threading.Thread(target=lambda: result.update(scan=data.scan_folder(root)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the scan did not terminate"
    scan = result["scan"]
    assert len(scan.manifest) == 6  # every image once, none through a link
    assert scan.skipped.get("broken link") == 1


def corrupt_copy(demo_dir: Path, dest: Path) -> tuple[Path, list[str]]:
    """The demo train split plus unreadable files with image names."""
    shutil.copytree(demo_dir / "train", dest / "train")
    bad = {
        "IM-9001-0001.jpeg": b"",                                         # empty
        "IM-9002-0001.jpeg": b"this is not an image, just text\n" * 10,   # text named .jpeg
        "person9003_virus_1.jpeg": (demo_dir / "train" / "PNEUMONIA").glob("*.jpeg").__next__().read_bytes()[:300],  # truncated
    }
    paths = []
    for name, content in bad.items():
        folder = dest / "train" / ("PNEUMONIA" if name.startswith("person") else "NORMAL")
        (folder / name).write_bytes(content)
        paths.append(str(folder / name))
    return dest, paths


def test_corrupt_images_in_train_are_left_out_with_a_warning(demo_dir, tmp_path):
    """What training is given: the split without the unreadable files (train.fit records and trains on
    exactly this split, which test_train checks on a finished run)."""
    from cxr_core import train

    root, bad = corrupt_copy(demo_dir, tmp_path / "messy")
    settings = default_settings("baseline_cnn")
    settings.epochs, settings.image_size, settings.batch_size = 1, 48, 16

    lines: list[str] = []
    scan, split, cache = train.prepare_data(settings, root, echo=lines.append)
    assert sorted(cache.failed) == sorted(bad)
    assert not split.path.isin(bad).any()
    assert len(split) == len(scan.manifest) - len(bad)
    warning = [line for line in lines if line.startswith("warning:")]
    assert warning and f"{len(bad)} unreadable images" in warning[0]
    # pipeline.readable keeps rows aligned with the cache: each kept row points at its own image.
    for row in split.sample(5, random_state=0).itertuples():
        assert np.array_equal(cache.read(np.array([row.row]))[0], pipeline.images.load_for_model(row.path, 48))
    assert {"train", "val"} <= set(split.split) and split.groupby("split").label.nunique().min() == 2  # trainable


def test_real_data(real_data):
    scan = data.scan_folder(real_data)
    manifest = scan.manifest
    assert len(manifest) == 5216
    assert manifest.class_name.value_counts().to_dict() == {"PNEUMONIA": 3875, "NORMAL": 1341}
    assert set(manifest.source_split) == {"train"}
    assert manifest.patient_id.nunique() < len(manifest)  # pneumonia patients have several images
    split = data.assign_splits(manifest, seed=42)
    assert data.patient_overlap(split) == {"train/val": 0, "train/test": 0, "val/test": 0}
    groups = patients_by_split(split)
    assert sum(len(g) for g in groups.values()) == manifest.patient_id.nunique()
    for name in ("train", "val", "test"):
        part = split[split.split == name]
        assert abs(part.label.mean() - 3875 / 5216) < 0.03
    assert 0.10 < (split.split == "val").mean() < 0.20 and 0.10 < (split.split == "test").mean() < 0.20


def _leakage_by_pair(*rows) -> dict[str, dict]:
    """leakage_report() by pair, of manifest rows (path, source_split, split, label, class_name, patient_id, kind)."""
    split = pd.DataFrame(rows, columns=["path", "source_split", "split", "label", "class_name", "patient_id", "kind"])
    return {row["pair"]: row for row in data.leakage_report(split)}


def test_shared_ids_between_official_folders_are_not_called_leakage():
    # The official train and test folders were numbered apart: person1 in both may be two children.
    report = _leakage_by_pair(
        ("a", "train", "train", 1, "PNEUMONIA", "person1", "virus"),
        ("b", "train", "val", 1, "PNEUMONIA", "person2", "virus"),
        ("c", "test", "test", 1, "PNEUMONIA", "person1", "bacteria"),
    )
    assert report["train/test"]["shared_ids"] == 1
    assert not report["train/test"]["exact"] and not report["train/test"]["leakage"]
    assert "naming artefact" in report["train/test"]["verdict"]


def test_shared_ids_between_carved_splits_are_leakage():
    report = _leakage_by_pair(
        ("a", "train", "train", 1, "PNEUMONIA", "person1", "virus"),
        ("b", "train", "val", 1, "PNEUMONIA", "person1", "virus"),
        ("c", "train", "test", 0, "NORMAL", "IM-0001", "none"),
    )
    assert report["train/val"]["exact"] and report["train/val"]["leakage"]
    assert report["train/test"] == dict(report["train/test"], shared_ids=0, leakage=False)
