"""Contracts of cxr_core.reference: the published results shown beside ours are complete, in the
project's metric keys, and consistent with the official test split they were measured on."""

from __future__ import annotations

import pytest

from cxr_core import reference
from cxr_core.config import METRICS

# The official test split: 234 NORMAL, 390 PNEUMONIA.
NORMAL, PNEUMONIA = 234, 390


@pytest.mark.parametrize("row", reference.PUBLISHED, ids=lambda row: row["name"])
def test_each_published_result_names_its_source_and_has_every_metric_as_a_rate(row):
    assert row["name"] and "test split" in row["source"]
    assert set(METRICS) <= set(row)
    assert all(row[m] is None or 0 < row[m] <= 1 for m in METRICS)
    assert any(row[m] is not None for m in METRICS)


@pytest.mark.parametrize("row", [r for r in reference.PUBLISHED if r["sensitivity"] and r["specificity"]],
                         ids=lambda row: row["name"])
def test_sensitivity_is_pneumonia_recall_and_specificity_normal_recall(row):
    # Swapped keys would give another accuracy on this split's 390:234 mix; published figures are rounded.
    implied = (PNEUMONIA * row["sensitivity"] + NORMAL * row["specificity"]) / (NORMAL + PNEUMONIA)
    assert implied == pytest.approx(row["accuracy"], abs=0.01)


def test_the_seed_studys_two_models_are_there_for_the_lesson():
    seed = [r["name"] for r in reference.PUBLISHED if r["name"].startswith("Seed study")]
    assert seed == ["Seed study: baseline CNN", "Seed study: regularized CNN"]
    assert "not directly comparable" in reference.NOT_COMPARABLE
