"""The quality grid end to end on a tiny demo set (train -> evaluate -> store -> render), and the stored
results rendering into the README and docs/results.md.

The grid runs once per module as a person runs it (`python benchmarks/grid.py ...`, a child process):
one model, one recipe, two seeds, one epoch at 64 px. Each test recomputes a reported figure from the
raw data the grid wrote (per-run rows, confusion counts, per-image predictions); none judges quality.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import grid
import grid_report
import pandas as pd
import pytest
from sklearn.metrics import f1_score

import common  # benchmarks/ is on the path (pytest.ini), as for `python benchmarks/grid.py`
from cxr_core.config import METRICS, PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def run_grid(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "grid.py"), *map(str, args)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def docs_copy(root: Path) -> Path:
    """README.md and docs/*.md copied into a fresh folder, for --docs-root."""
    (root / "docs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "README.md", root / "README.md")
    for path in (PROJECT_ROOT / "docs").glob("*.md"):
        shutil.copy(path, root / "docs" / path.name)
    return root


def section(root: Path, name: str) -> str:
    text = (Path(root) / common.DOC_SECTIONS[name]).read_text()
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]


@pytest.fixture(scope="module")
def demo_grid(tmp_path_factory):
    """One grid on the demo set: regularized_cnn defaults, seeds 1 and 2, one epoch; docs rewritten in a copy."""
    from cxr_core.demo import write_demo_dataset

    tmp = tmp_path_factory.mktemp("grid")
    data = write_demo_dataset(tmp / "chest_xray", n_normal=24, n_pneumonia=24, seed=5, image_size=64)
    test = write_demo_dataset(tmp / "shifted", n_normal=20, n_pneumonia=20, seed=11, image_size=64)
    out, root = tmp / "results", docs_copy(tmp / "docs_root")
    run_grid("--data", data, "--test-data", test, "--models", "regularized_cnn", "--recipes", "defaults",
             "--seeds", "1,2", "--epochs", 1, "--runs", tmp / "runs", "--out", out, "--quiet",
             "--update-docs", "--docs-root", root)
    n_test = len(list((test / "test").rglob("*.jpeg")))
    return {"result": json.loads((out / "grid.json").read_text()), "out": out, "root": root, "n_test": n_test,
            "data": data, "test": test}


def test_each_seed_is_trained_scored_and_stored_with_what_recomputes_it(demo_grid):
    result = demo_grid["result"]
    assert [(r["model"], r["recipe"], r["seed"]) for r in result["runs"]] == [("regularized_cnn", "defaults", 1),
                                                                          ("regularized_cnn", "defaults", 2)]
    assert not result["failed"] and result["runs"][0]["run"] != result["runs"][1]["run"]
    for row in result["runs"]:
        assert row["epochs_run"] == 1 and row["commit"] == result["git"]["commit"] and row["synthetic"]
        assert not Path(row["data"]).is_absolute() and not Path(row["test"]["predictions"]).is_absolute()
        (tn, fp), (fn, tp) = row["test"]["confusion_matrix"]
        assert tn + fp + fn + tp == row["test"]["n"] == demo_grid["n_test"]
        # The stored figures are what the stored predictions and counts give (scikit-learn, at the run's threshold).
        predictions = pd.read_csv(PROJECT_ROOT / row["test"]["predictions"])
        called = (predictions["probability"] >= row["test"]["threshold"]).astype(int)
        assert f1_score(predictions["label"], called, average="macro") == pytest.approx(row["test"]["macro_f1"])
        assert (tp + tn) / row["test"]["n"] == pytest.approx(row["test"]["accuracy"])
        assert tp / (tp + fn) == pytest.approx(row["test"]["sensitivity"])
        assert {r["rule"] for r in row["rules"]} == set(grid.RULES)
        assert next(r for r in row["rules"] if r["rule"] == "fixed 0.5")["threshold"] == 0.5


def test_tables_show_the_seeds_mean_and_range_from_the_rows_and_a_pooled_interval(demo_grid):
    result = demo_grid["result"]
    runs = result["runs"]
    pooled = result["pooled"]["regularized_cnn/defaults"]
    assert pooled["runs"] == [r["run"] for r in runs]
    table = grid_report.render_ablation(result)
    line = next(x for x in table.splitlines() if x.startswith("| `defaults` |"))
    for m in METRICS:
        values = [r["test"][m] for r in runs]
        low, high = pooled[m]
        assert f"| {statistics.fmean(values):.3f} [{low:.3f}, {high:.3f}] |" in line
        assert f"{min(values):.3f}-{max(values):.3f}" in line.split(" | ")[-4]  # the seed range column
    assert "| 1, 2 |" in line and "official test split" not in table.split("\n\n")[0]  # demo: named by its folder
    # A seed's predictions gone: no interval is invented, the mean and range still show.
    missing = [dict(runs[0], test=dict(runs[0]["test"], predictions="nowhere.csv")), runs[1]]
    assert grid.pooled_interval(missing) is None
    assert grid_report.figures(missing, "test", None)["auc"][3] is None


def test_docs_sections_name_their_split_and_put_the_withheld_half_first(demo_grid):
    readme, quality = section(demo_grid["root"], "results"), section(demo_grid["root"], "quality")
    lines = readme.splitlines()
    withheld = next(i for i, x in enumerate(lines) if "withheld half (308 images)" in x)
    ours = next(i for i, x in enumerate(lines) if x.startswith("| ours: regularized_cnn, our recipe |"))
    assert withheld < ours and "scored independently" in lines[withheld] and "shifted" in lines[ours]
    accuracy = statistics.fmean(r["test"]["accuracy"] for r in demo_grid["result"]["runs"])
    assert f"| {accuracy:.3f} [" in lines[ours]  # the seeds' mean, with its pooled interval
    assert "The dev half chose the recipe" in readme and grid_report.RANGE_HEADER in readme
    assert "| published: Seed study: regularized CNN | whole official test split (624 images) |" in readme
    assert "SYNTHETIC" in quality and "| regularized_cnn | `defaults` |" in quality
    assert (demo_grid["out"] / "grid.md").read_text().startswith("# Quality grid")


def test_keep_holds_the_stored_runs_and_their_pooled_interval_when_a_new_cell_fails(demo_grid, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(demo_grid["out"] / "grid.json", out / "grid.json")
    child = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "grid.py"), "--data", str(demo_grid["data"]),
                            "--test-data", str(demo_grid["test"]), "--models", "baseline_cnn", "--recipes", "defaults",
                            "--seeds", "9", "--epochs", "0", "--keep", "--runs", str(tmp_path / "runs"), "--out", str(out),
                            "--quiet"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert child.returncode == 1, child.stdout[-2000:] + child.stderr[-2000:]  # train refused --epochs 0
    kept, before = json.loads((out / "grid.json").read_text()), demo_grid["result"]
    assert kept["runs"] == before["runs"] and kept["pooled"] == before["pooled"]
    assert [(f["model"], f["seed"]) for f in kept["failed"]] == [("baseline_cnn", 9)]
    assert "at least 1" in kept["failed"][0]["error"]
    auc = statistics.fmean(r["test"]["auc"] for r in before["runs"])
    assert f"| {auc:.3f} [{before['pooled']['regularized_cnn/defaults']['auc'][0]:.3f}, " in (out / "grid.md").read_text()


def test_the_stored_results_render_into_the_project_docs_and_the_headline_is_the_withheld_half(tmp_path):
    """--render rewrites the sections from grid.json and withheld.json alone; the project's docs are that output."""
    out, root = tmp_path / "out", docs_copy(tmp_path / "docs_root")
    out.mkdir()
    shutil.copy(RESULTS / "grid.json", out / "grid.json")
    run_grid("--render", "--out", out, "--update-docs", "--docs-root", root)
    for name in ("results", "quality", "ablation"):
        assert section(root, name) == section(PROJECT_ROOT, name), f"{name}: rerun grid.py --render --update-docs"
    withheld = json.loads((RESULTS / "withheld.json").read_text())
    seeds = [r for r in withheld["runs"] if r["recipe"] == "defaults"]
    headline = next(x for x in section(root, "results").splitlines() if "withheld half" in x)
    accuracy = [r["test"]["accuracy"] for r in seeds]
    assert f"| {statistics.fmean(accuracy):.3f} |" in headline and f"{min(accuracy):.3f}-{max(accuracy):.3f}" in headline
    assert "[" not in headline  # no interval was reported for the withheld half: none is shown


def test_where_the_study_lands_is_said_from_its_rows():
    def row(model: str, recipe: str, accuracy: float, specificity: float) -> dict:
        return {"model": model, "recipe": recipe, "test_data": "../shared/data/chest_xray_test_dev",
                "test": {"n": 316, "accuracy": accuracy, "specificity": specificity}}

    ours = row("regularized_cnn", "defaults", 0.89, 0.77)
    runs = [row("baseline_cnn", "study", 0.70, 0.20), row("baseline_cnn", "study", 0.74, 0.30),
            row("regularized_cnn", "study", 0.80, 0.50), row("regularized_cnn", "study", 0.82, 0.55), ours]
    text = grid_report.where_the_study_lands({"runs": runs})
    assert "official test split, dev half (316 images)" in text
    assert ("`baseline_cnn` over 2 seeds: accuracy 0.720 (seeds 0.700-0.740; the range spans the published 0.72), "
            "specificity 0.250 (seeds 0.200-0.300; the range spans the published 0.27)") in text
    assert "`regularized_cnn` over 2 seeds: accuracy 0.810 (seeds 0.800-0.820; the range is below the published 0.86)" in text
    assert grid_report.where_the_study_lands({"runs": [ours]}) == ""
