"""Contracts of cxr_core.explore: what the Dataset explorer shows about a data set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core import data, explore


@pytest.fixture(scope="module")
def demo_split(demo_dir):
    scan = data.scan_folder(demo_dir)
    return scan, data.assign_splits(scan.manifest, seed=42)


def _manifest(labels, patients=None, split=None) -> pd.DataFrame:
    labels = list(labels)
    return pd.DataFrame({
        "path": [f"/nowhere/{i}.jpeg" for i in range(len(labels))],
        "label": labels,
        "class_name": ["PNEUMONIA" if y else "NORMAL" for y in labels],
        "patient_id": patients or [f"p{i}" for i in range(len(labels))],
        "split": split or ["train"] * len(labels),
    })


def test_dataset_summary_counts_what_the_scan_found(demo_split):
    scan, _ = demo_split
    summary = explore.dataset_summary(scan)
    assert summary["synthetic"] is True
    assert summary["images"] == len(scan.manifest) == 120
    assert summary["classes"] == {"NORMAL": 60, "PNEUMONIA": 60}
    assert summary["official_splits"]["val"] == 0  # the demo has train/ and test/ only
    assert sum(summary["official_splits"].values()) == 120
    assert summary["patients"] == scan.manifest["patient_id"].nunique()


def test_always_pneumonia_accuracy_is_the_pneumonia_share():
    split = ["train"] * 8 + ["test"] * 4
    labels = [1, 1, 1, 1, 1, 1, 0, 0] + [1, 0, 0, 0]
    table = explore.class_balance(_manifest(labels, split=split)).set_index("split")
    assert table.loc["train", "always_pneumonia_accuracy"] == pytest.approx(0.75)
    assert table.loc["test", "always_pneumonia_accuracy"] == pytest.approx(0.25)
    assert table.loc["test", "majority_accuracy"] == pytest.approx(0.75)  # there NORMAL is the majority
    assert table.loc["all", "images"] == 12 and table.loc["all", "PNEUMONIA"] == 7
    assert "val" not in table.index  # an empty split gets no row


def test_images_per_patient_accounts_for_every_image(demo_split):
    _, split = demo_split
    table = explore.images_per_patient(split)
    for class_name, part in table.groupby("class_name"):
        assert (part["images_per_patient"] * part["patients"]).sum() == (split["class_name"] == class_name).sum()
    assert table["images_per_patient"].max() > 1  # the demo gives some children several X-rays


def test_a_random_image_split_leaks_patients_that_the_patient_split_keeps_apart(demo_split):
    scan, split = demo_split
    assert sum(data.patient_overlap(split).values()) == 0
    assert sum(explore.naive_split_leakage(scan.manifest, seed=0).values()) > 0


def test_gallery_respects_filters_and_seed(demo_split):
    _, split = demo_split
    sample = explore.sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=5, seed=1)
    assert 0 < len(sample) <= 5
    assert set(sample["class_name"]) == {"PNEUMONIA"} and set(sample["kind"]) == {"virus"}
    assert (sample["width"] == 96).all() and (sample["height"] == 96).all()
    assert (sample["file_kb"] > 0).all()
    assert sample["file_name"].str.endswith(".jpeg").all()
    again = explore.sample_gallery(split, class_name="PNEUMONIA", kind="virus", n=5, seed=1)
    assert list(again["path"]) == list(sample["path"])
    other = explore.sample_gallery(split, n=12, seed=2)
    assert list(other["path"]) != list(explore.sample_gallery(split, n=12, seed=3)["path"])
    test_only = explore.sample_gallery(split, split="test", n=50)
    assert set(test_only["split"]) == {"test"}


def test_gallery_with_no_match_is_empty_not_an_error(demo_split):
    _, split = demo_split
    sample = explore.sample_gallery(split, class_name="NORMAL", kind="virus")
    assert sample.empty and {"file_name", "width", "height"} <= set(sample.columns)


def test_size_table_reads_headers_and_skips_unreadable_files(demo_split, tmp_path):
    scan, _ = demo_split
    bad = tmp_path / "IM-9999-0001.jpeg"
    bad.write_bytes(b"not an image at all")
    manifest = pd.concat([scan.manifest.head(10), pd.DataFrame([{"path": str(bad), "class_name": "NORMAL"}])])
    table = explore.image_size_table(manifest, n=50)
    assert len(table) == 10
    assert (table["aspect"] == 1.0).all() and set(table["format"]) == {"JPEG"}


def test_class_appearance_gives_a_mean_image_and_a_histogram_per_class(demo_split, tmp_path):
    scan, _ = demo_split
    bad = tmp_path / "person1_virus_1.jpeg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    manifest = pd.concat([scan.manifest, pd.DataFrame([{"path": str(bad), "class_name": "PNEUMONIA"}])])
    looks = explore.class_appearance(manifest, per_class=200, image_size=48)
    assert set(looks) == {"NORMAL", "PNEUMONIA"}
    assert looks["NORMAL"].images == 60 and looks["NORMAL"].failed == 0
    assert looks["PNEUMONIA"].images == 60 and looks["PNEUMONIA"].failed == 1
    for look in looks.values():
        assert look.mean_image.shape == (48, 48) and look.mean_image.dtype == np.uint8
        assert look.histogram.shape == (256,) and look.histogram.sum() == pytest.approx(1.0)
        assert look.mean_image.max() > 0


def test_leakage_findings_say_passed_failed_or_uncertain():
    clean = [{"pair": "train/val", "shared_ids": 0, "exact": True, "leakage": False}]
    leaky = [{"pair": "train/val", "shared_ids": 3, "exact": True, "leakage": True}]
    official = clean + [{"pair": "train/test", "shared_ids": 7, "exact": False, "leakage": False}]
    naive = {"train/test": 12}
    assert [severity for severity, _ in explore.leakage_findings(clean, naive)] == ["passed", "note"]
    assert explore.leakage_findings(leaky, naive)[0] == ("leakage", "Patients in two splits: train/val 3.")
    severities, texts = zip(*explore.leakage_findings(official, naive))
    assert severities == ("passed", "note", "note")
    assert "train/test: 7" in texts[1] and data.OVERLAP_UNCERTAIN in texts[1]
    assert texts[-1] == "A random split by image instead would share 12 patients between train/test."

