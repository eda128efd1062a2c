"""The benchmarks run end to end on a tiny demo set and write what the docs' tables are made of.

Each benchmark runs as a person runs it (`python benchmarks/x.py ...`, a child process), with
one-epoch overrides so that it proves the plumbing, not the figures. Nothing is written into the
project: results, run stores and scratch folders go to pytest's temp folders (the marker tests
work on a copy of README.md and docs/, passed as --docs-root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import common  # benchmarks/common.py (pytest.ini puts benchmarks/ on the path, as `python benchmarks/x.py` does)
from cxr_core.config import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """Smaller than the shared demo set: the benchmarks train on it several times."""
    from cxr_core.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("bench") / "chest_xray", n_normal=24, n_pneumonia=24,
                              seed=5, image_size=64)


def run_script(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def between(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]


def section(root: Path, name: str) -> str:
    """The generated section `name` of the file it lives in under a documentation root."""
    return between((Path(root) / common.DOC_SECTIONS[name]).read_text(), name)


def docs_copy(tmp_path: Path) -> Path:
    """README.md and docs/*.md copied into a fresh folder, for --docs-root."""
    root = tmp_path / "docs_root"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text((PROJECT_ROOT / "README.md").read_text())
    for path in (PROJECT_ROOT / "docs").glob("*.md"):
        (root / "docs" / path.name).write_text(path.read_text())
    return root


# ---------------------------------------------------------------- shared helpers


def test_marker_replacement_changes_only_the_text_between_markers():
    text = ("# Title\n\nintro\n\n<!-- quality:start -->\nold table\n<!-- quality:end -->\n\nmiddle\n\n"
            "<!-- speed:start -->\nold speed\n<!-- speed:end -->\ntail without newline")
    new = common.replace_between_markers(text, "quality", "| a | b |\n|---|---|\n| 1 | $2 \\1 |")
    assert between(new, "quality").strip() == "| a | b |\n|---|---|\n| 1 | $2 \\1 |"  # no regex escapes applied
    assert new.split("<!-- quality:start -->")[0] == text.split("<!-- quality:start -->")[0]
    assert new.split("<!-- quality:end -->")[1] == text.split("<!-- quality:end -->")[1]
    assert common.replace_between_markers(new, "quality", "| a | b |\n|---|---|\n| 1 | $2 \\1 |") == new
    with pytest.raises(ValueError):
        common.replace_between_markers("no markers here", "quality", "x")
    with pytest.raises(ValueError):
        common.replace_between_markers(text + text, "speed", "x")  # two pairs: refuse to guess


def test_update_docs_on_a_copy_keeps_the_rest_of_each_file(tmp_path):
    root = docs_copy(tmp_path)
    original = (root / "docs" / "performance.md").read_text()
    assert common.update_docs({"speed": "fresh figures"}, root) == [root / "docs" / "performance.md"]
    updated = (root / "docs" / "performance.md").read_text()
    assert between(updated, "speed").strip() == "fresh figures"
    assert between(updated, "classroom") == between(original, "classroom")
    assert updated.replace(between(updated, "speed"), "") == original.replace(between(original, "speed"), "")
    (root / "docs" / "performance.md").chmod(0o644)
    common.update_docs({"speed": "again"}, root)
    assert (root / "docs" / "performance.md").stat().st_mode & 0o777 == 0o644  # the rewrite keeps permissions
    for name, relative in common.DOC_SECTIONS.items():  # every benchmark's section is in the real docs once
        assert (PROJECT_ROOT / relative).read_text().count(f"<!-- {name}:start -->") == 1, relative


def test_markdown_table_escapes_pipes_and_formats_numbers():
    table = common.markdown_table(["name", "value"], [["a|b", 0.12345], ["c", None]])
    assert table.splitlines() == ["| name | value |", "|---|---|", "| a\\|b | 0.123 |", "| c | n/a |"]


def test_machine_description_names_the_cpu_and_tensorflow(monkeypatch):
    machine = common.machine()
    assert machine["cores"] >= 1 and machine["cpu"] and machine["tensorflow"].startswith("2.")
    monkeypatch.setattr(common, "_gpus", lambda: [])
    assert common.machine()["gpu"] == "none"
    monkeypatch.setattr(common, "_gpus", lambda: ["GPU 0: NVIDIA H100", "GPU 1: NVIDIA H100"])
    assert common.machine()["gpu"] == "GPU 0: NVIDIA H100, GPU 1: NVIDIA H100"
    assert "GPU: GPU 0: NVIDIA H100, GPU 1" in common.machine_line(common.machine())


def test_stack_sampler_attributes_time_to_the_project_function_that_ran():
    import time

    import numpy as np

    from cxr_core import evaluate

    y, p = np.tile([0, 1], 500), np.linspace(0, 1, 1000)
    with common.StackSampler(interval=0.002) as sampler:
        until = time.perf_counter() + 0.4
        while time.perf_counter() < until:
            evaluate.choose_threshold(y, p)
    profile = sampler.top()
    assert profile["samples"] > 10
    top = {row["function"]: row["share"] for row in profile["inclusive_project"]}
    assert top.get("cxr_core/evaluate.py:choose_threshold", 0) > 0.8, profile


def test_provenance_names_the_commit_and_paths_from_the_project(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    assert common.git_state()["commit"] == head
    assert common.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    for args in (["init", "-q"], ["add", "a.txt"], ["commit", "-q", "-m", "a"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                       cwd=repo, check=True, capture_output=True)
    assert common.git_state(repo)["dirty"] is False
    (repo / "b.txt").write_text("b\n")
    assert common.git_state(repo)["dirty"] is True  # untracked files count
    assert common.commit_label({"commit": head, "dirty": True}) == head[:10]  # the docs never say "dirty"
    assert common.commit_label(None) == "not recorded"
    assert common.project_relative(PROJECT_ROOT.parent / "shared" / "data") == os.path.join("..", "shared", "data")


# ---------------------------------------------------------------- classroom (the report; the run is test_classroom.py)


def test_classroom_report_says_what_a_view_costs_the_server_and_whose_each_figure_is():
    import classroom_report

    walks = [{"steps": {"Home": 1.0, "Dataset": 2.0}}, {"steps": {"Home": 1.5}}]
    cost = classroom_report.server_cost({}, walks, cpu_s=1.5, cores=2)
    assert cost == {"page_views": 3, "server_cpu_s_per_view": 0.5, "capacity_views_per_s_per_core": 2.0,
                    "capacity_views_per_s_machine": 4.0}
    assert classroom_report.server_cost({}, [], cpu_s=1.0, cores=2)["server_cpu_s_per_view"] is None
    result = {"sessions": 2, "errors": 0, "p50_s": 1.2, "p95_s": 2.0, "per_step": {"Home": {"p50_s": 1.2}},
              "server_cpu_s": 1.5, "peak_rss_mb": 300.0, "date": "2026-11-30 10:00:00 UTC", "git": {"commit": "a" * 40},
              "machine": "a CPU, 2 cores", "command": "python benchmarks/classroom.py --sessions 2", **cost}
    text = classroom_report.render(result)
    assert "| server CPU seconds per page view | 0.50 s (1.5 s for 3 views) | server |" in text
    assert "| implied capacity: page views per second per core | 2.00 | server |" in text
    assert "clients (browser rendering included)" in text and text.startswith("Measured on 2026-11-30 at commit aaaaaaaaaa")


# ---------------------------------------------------------------- speed


FAKE_APP = {
    "app.py": 'import streamlit as st\n\nst.navigation([st.Page("views/runs.py", title="Runs"), '
              'st.Page("views/compare.py", title="Compare")]).run()\n',
    "views/helpers.py": "from cxr_core.store import RunStore\n\n\ndef run_ids():\n"
                        "    return [r.run_id for r in RunStore().finished()]\n",
    "views/runs.py": "import streamlit as st\nfrom views.helpers import run_ids\n\nst.title('Runs')\n"
                     "st.write(len(run_ids()))\n",
    "views/compare.py": "import streamlit as st\nfrom views.helpers import run_ids\n\nst.title('Compare')\n"
                        "ids = run_ids()\nchosen = st.multiselect('Runs', ids, default=ids[:2], format_func=lambda r: 'run ' + r)\n"
                        "st.write(len(chosen))\n",
}


@pytest.fixture
def fake_app(tmp_path):
    """A stand-in dashboard (st.navigation over two pages, one with a run multiselect)."""
    for name, text in FAKE_APP.items():
        (tmp_path / "app" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "app" / name).write_text(text)
    return tmp_path / "app" / "app.py"


def test_speed_pipeline_predict_scale(bench_data, tmp_path):
    out = tmp_path / "results"
    run_script("speed.py", "--data", bench_data, "--only", "pipeline,predict,scale", "--predict-models",
               "regularized_cnn", "--calls", 3, "--scale-images", 400, "--out", out, "--work", tmp_path / "work",
               "--quiet", "--profile")
    result = json.loads((out / "speed.json").read_text())
    sections = result["sections"]
    pipeline = sections["pipeline"]
    assert pipeline["images"] > 0
    for key in ("seed_loader", "ours_cold", "ours_warm"):
        assert pipeline[key]["images_per_s"] > 0
    predict = sections["predict"]["models"]["regularized_cnn"]
    for kind in ("predict", "gradcam"):
        assert 0 < predict[kind]["p50_ms"] <= predict[kind]["p95_ms"] < 60_000
        profile = predict[kind]["profile"]
        assert set(profile) == {"samples", "interval_s", "inclusive_project", "self"}
        assert all(0 < row["share"] <= 1 for row in profile["inclusive_project"] + profile["self"])
    scale = sections["scale"]["runs"]
    assert [r["images"] for r in scale] == [200, 400]
    assert all(r["peak_rss_mib"] > 0 and r["epoch_images_per_s"] > 0 for r in scale)
    assert scale[1]["cache_mib"] > scale[0]["cache_mib"]
    markdown = (out / "speed.md").read_text()
    assert "p95 <= 150 ms" in markdown and "input pipeline images/s" in markdown and "scale: peak memory" in markdown
    assert result["machine"]["cpu"] and result["targets"]["page_s"] == 1.5
    assert result["data"] == os.path.relpath(bench_data, PROJECT_ROOT) and not os.path.isabs(result["data"])
    assert result["git"] == common.git_state() or result["git"]["commit"] == common.git_state()["commit"]
    for section in sections.values():
        assert section["git"] == result["git"] and section["command"].startswith("python benchmarks/speed.py")
    assert str(PROJECT_ROOT) not in (out / "speed.md").read_text()
    assert not list((tmp_path / "work").iterdir())  # scratch removed


def test_speed_training_and_memory(bench_data, fake_app, tmp_path):
    out, root = tmp_path / "results", docs_copy(tmp_path)
    run_script("speed.py", "--data", bench_data, "--test-data", bench_data, "--only", "training,memory", "--epochs", 2,
               "--repeats", 1, "--app", fake_app, "--out", out, "--work", tmp_path / "work", "--quiet",
               "--update-docs", "--docs-root", root, timeout=600)
    sections = json.loads((out / "speed.json").read_text())["sections"]
    training = sections["training"]
    assert "error" not in training, training
    assert training["flags_note"] == "--epochs 2 --repeats 1 --test-data " + os.path.relpath(bench_data, PROJECT_ROOT)
    runs = {r["side"]: r for r in training["runs"]}
    assert list(runs) == ["seed_regularized", "ours", "seed_baseline"] == training["order"]
    target = {k: runs["seed_regularized"]["per_epoch"][-1][k] for k in ("accuracy", "auc")}
    for side, run in runs.items():
        epochs = run["per_epoch"]
        assert [e["epoch"] for e in epochs] == [1, 2]
        assert 0 < epochs[0]["wall_s"] < epochs[1]["wall_s"] < run["total_wall_s"]
        assert run["evaluation_s"] == pytest.approx(sum(e["eval_s"] for e in epochs)) and run["evaluation_s"] > 0
        assert run["time_to_quality"]["target"] == target
        rule = epochs[0]["threshold_rule"]
        assert rule == "fixed at 0.5" if side != "ours" else rule.startswith("highest specificity")
    # The seed recipe always reaches its own final figures, at its final epoch or sooner.
    seed_ttq = runs["seed_regularized"]["time_to_quality"]
    assert seed_ttq["reached"] and seed_ttq["wall_s"] == runs["seed_regularized"]["per_epoch"][seed_ttq["epoch"] - 1]["wall_s"]
    ours_ttq = runs["ours"]["time_to_quality"]
    expected = ours_ttq["wall_s"] / seed_ttq["wall_s"] if ours_ttq["reached"] else None
    assert training["summary"]["ratio"]["values"] == [expected]
    assert training["summary"]["seed_regularized"]["reached"] == 1
    memory = sections["memory"]
    assert memory["training"]["peak_rss_mib"] == runs["ours"]["peak_rss_mib"] > 100
    assert 0 < memory["dashboard"]["peak_rss_mib"] < 8192
    speed = section(root, "speed")
    assert "time to quality, ours / seed regularized recipe, 1 repeat(s)" in speed and "training peak memory" in speed
    assert "| baseline_cnn, the study's recipe |" in speed and "dev scoring (excluded)" in speed
    assert section(root, "classroom") == section(PROJECT_ROOT, "classroom")


def test_speed_pages_with_ten_runs(bench_data, fake_app, tmp_path):
    out = tmp_path / "results"
    run_script("speed.py", "--data", bench_data, "--only", "pages", "--app", fake_app, "--out", out,
               "--work", tmp_path / "work", "--quiet")
    pages = json.loads((out / "speed.json").read_text())["sections"]["pages"]
    assert pages["runs_in_store"] == 10
    assert [p["page"] for p in pages["pages"]] == ["(default page of app.py)", "views/runs.py", "views/compare.py"]
    assert [p.get("title") for p in pages["pages"]] == ["Runs", "Runs", "Compare"]
    assert all(p["first_visit_s"] > 0 and not p["exceptions"] for p in pages["pages"])
    assert pages["compare"]["runs_selected"] == pages["compare"]["selected_after_run"] == 5
    assert "views/compare.py with 5 runs selected" in (out / "speed.md").read_text()


def test_page_discovery_reads_the_st_page_calls_of_app_py(tmp_path):
    import speed_pages

    (tmp_path / "pages").mkdir()
    for name in ("a.py", "b.py", "helpers.py"):
        (tmp_path / "pages" / name).write_text("import streamlit as st\nst.title('x')\n")
    app = tmp_path / "app.py"
    app.write_text("import streamlit as st\nst.write('home')\n")
    assert speed_pages.discover_pages(app) == []  # no st.Page: nothing is guessed from the folder
    app.write_text("import streamlit as st\nfrom streamlit import Page\n\ndef home():\n    st.page_link('pages/helpers.py')\n\n"
                   "b = Page('pages/b.py', title='B')\n"
                   "st.navigation([st.Page(home, default=True), st.Page('pages/a.py'), b,\n"
                   "               st.Page('pages/missing.py')]).run()\n")
    assert speed_pages.discover_pages(app) == ["pages/b.py", "pages/a.py", "pages/missing.py"]
    assert speed_pages.discover_pages(tmp_path / "elsewhere" / "app.py") == []


def test_page_discovery_on_the_real_dashboard():
    import re

    import speed_pages

    app = PROJECT_ROOT / "app.py"
    named = re.findall(r"""st\.Page\(\s*["']([^"']+\.py)["']""", app.read_text())
    assert named and speed_pages.discover_pages(app) == named
    assert all((PROJECT_ROOT / page).is_file() for page in named)


def test_speed_entry_script_lists_a_module_for_every_section():
    import importlib

    import speed

    assert list(speed.SECTIONS) == ["pipeline", "training", "predict", "pages", "memory", "scale"]
    for module, function, what in [*speed.SECTIONS.values(), *((m, f, "") for m, f in speed.CHILDREN.values())]:
        assert callable(getattr(importlib.import_module(module), function))
        assert (BENCHMARKS / f"{module}.py").read_text().count("\n") < 350


# ---------------------------------------------------------------- time to quality (pure)


def history(*rows):
    return [{"epoch": i + 1, "wall_s": 10.0 * (i + 1), "accuracy": a, "auc": u} for i, (a, u) in enumerate(rows)]


def test_time_to_quality_seed_final_epoch_is_its_worst():
    from speed_time_to_quality import final_target, time_to_quality

    seed = history((0.80, 0.90), (0.90, 0.95), (0.70, 0.85))  # the last epoch is the worst
    target = final_target(seed)
    assert target == {"accuracy": 0.70, "auc": 0.85}
    assert time_to_quality(seed, target) | {"at": None} == {"reached": True, "epoch": 1, "wall_s": 10.0, "epochs_run": 3,
                                                            "target": target, "at": None}
    # Both figures must be reached: epoch 1 has the accuracy but not the AUC, epoch 2 has both.
    ours = history((0.75, 0.80), (0.71, 0.86), (0.99, 0.99))
    assert time_to_quality(ours, target)["epoch"] == 2 and time_to_quality(ours, target)["wall_s"] == 20.0


def test_time_to_quality_never_reached():
    from speed_time_to_quality import time_to_quality

    ours = history((0.60, 0.99), (0.99, 0.60), (None, 0.99))
    result = time_to_quality(ours, {"accuracy": 0.7, "auc": 0.9})
    assert result["reached"] is False and result["epoch"] is None and result["wall_s"] is None
    assert result["epochs_run"] == 3
    assert time_to_quality(ours, None)["reached"] is False  # the seed's final AUC was undefined


def test_the_recorded_command_names_folders_relative_to_the_project():
    script = str(PROJECT_ROOT / "benchmarks" / "speed.py")
    elsewhere = str(PROJECT_ROOT.parent / "shared" / "data")
    line = common.command_line([script, "--data", elsewhere, f"--out={elsewhere}", "--only", "training"])
    assert line == ("python benchmarks/speed.py --data ../shared/data --out=../shared/data --only training")
    assert str(PROJECT_ROOT.parent) not in line


@pytest.mark.parametrize("tn, fp, fn, tp", [(80, 40, 6, 190), (117, 0, 3, 196), (60, 57, 1, 198)])
def test_macro_f1_from_the_rates_is_sklearns_on_the_same_confusion_matrix(tn, fp, fn, tp):
    from sklearn.metrics import f1_score
    from speed_time_to_quality import macro_f1_from_rates

    y_true = np.array([0] * (tn + fp) + [1] * (fn + tp))
    y_pred = np.array([0] * tn + [1] * fp + [0] * fn + [1] * tp)
    n = tn + fp + fn + tp
    derived = macro_f1_from_rates((tn + tp) / n, tp / (tp + fn), tn / (tn + fp))
    assert derived == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_macro_f1_from_rates_is_undefined_when_they_cannot_fix_the_class_shares():
    from speed_time_to_quality import macro_f1_from_rates

    assert macro_f1_from_rates(0.9, 0.9, 0.9) is None  # sensitivity = specificity: any prevalence fits
    assert macro_f1_from_rates(None, 0.9, 0.8) is None


def test_evaluation_time_is_subtracted_from_later_epochs_only():
    from speed_time_to_quality import exclude_evaluation

    events = [{"epoch": 1, "ended": 110.0, "eval_s": 2.0}, {"epoch": 2, "ended": 125.0, "eval_s": 3.0},
              {"epoch": 3, "ended": 140.0, "eval_s": 4.0}]
    assert [r["wall_s"] for r in exclude_evaluation(events, launched=100.0)] == [10.0, 23.0, 35.0]


def test_spread_and_moves_beyond_the_range_between_repeats():
    from speed_report import ratio_verdict, spread_text
    from speed_time_to_quality import moved_beyond_range, spread

    s = spread([3.0, 1.0, 2.0, None])
    assert (s["median"], s["min"], s["max"], s["n"], s["missing"]) == (2.0, 1.0, 3.0, 4, 1)
    assert spread_text(s, 1, " s") == "2.0 s [1.0, 3.0]; not reached in 1 of 4"
    assert spread_text(spread([None, None])) == "not reached (2 of 2 repeats)"
    assert moved_beyond_range(spread([5.0]), spread([2.0, 2.5, 3.0]))  # moved 2.5, range 1
    assert not moved_beyond_range(spread([2.9]), spread([2.0, 2.5, 3.0]))
    assert not moved_beyond_range(spread([9.0]), spread([2.0]))  # one repeat: no range to judge by
    assert ratio_verdict(spread([0.3, 0.25, 0.33])) == "yes"  # the target: at least 3x faster in every repeat
    assert ratio_verdict(spread([0.3, 0.6, None])) == "varies (1 of 3 repeats)"
    assert ratio_verdict(spread([0.4, 0.5, 0.45])) == "NO"
