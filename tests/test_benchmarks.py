"""The benchmarks run end to end on a tiny demo set and write what the README's tables are made of.

Each benchmark runs as a person runs it (`python benchmarks/x.py ...`, a child process), with
one-epoch overrides so that it proves the plumbing, not the figures. Nothing is written into the
project: results, run stores and scratch folders go to pytest's temp folders (the README marker
test works on a copy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = PROJECT_ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402

MODELS = ("baseline_cnn", "regularized_cnn")


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    """Smaller than the shared demo set: the benchmarks train on it several times."""
    from cxr_core.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("bench") / "chest_xray", n_normal=24, n_pneumonia=24,
                              seed=5, image_size=64)


def run_script(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def between(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]


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


def test_update_readme_on_a_copy_keeps_the_rest_of_the_real_readme(tmp_path):
    copy = tmp_path / "README.md"
    original = (PROJECT_ROOT / "README.md").read_text()
    copy.write_text(original)
    common.update_readme("speed", "fresh figures", copy)
    updated = copy.read_text()
    assert between(updated, "speed").strip() == "fresh figures"
    assert between(updated, "quality") == between(original, "quality")
    assert updated.replace(between(updated, "speed"), "") == original.replace(between(original, "speed"), "")
    copy.chmod(0o644)
    common.update_readme("speed", "again", copy)
    assert copy.stat().st_mode & 0o777 == 0o644  # the atomic rewrite keeps the file's permissions


def test_markdown_table_escapes_pipes_and_formats_numbers():
    table = common.markdown_table(["name", "value"], [["a|b", 0.12345], ["c", None]])
    assert table.splitlines() == ["| name | value |", "|---|---|", "| a\\|b | 0.123 |", "| c | n/a |"]


def test_machine_description_names_the_cpu_and_tensorflow():
    machine = common.machine()
    assert machine["cores"] >= 1 and machine["cpu"] and machine["tensorflow"].startswith("2.")
    assert machine["gpu"]  # "none" or the devices


# ---------------------------------------------------------------- quality


def test_quality_benchmark_end_to_end_then_reuse(bench_data, tmp_path):
    runs, out, readme = tmp_path / "runs", tmp_path / "results", tmp_path / "README.md"
    readme.write_text((PROJECT_ROOT / "README.md").read_text())
    common_args = ["--data", bench_data, "--models", ",".join(MODELS), "--runs", runs, "--out", out, "--quiet",
                   *[a for m in MODELS for a in ("--epochs-override", f"{m}=1")]]
    run_script("quality.py", *common_args)
    result = json.loads((out / "quality.json").read_text())
    assert result["complete"] and not result["failed"] and result["synthetic"]
    assert [r["model"] for r in result["rows"]] == list(MODELS)
    for row in result["rows"] + [result["ensemble"]]:
        for metric in ("accuracy", "sensitivity", "specificity", "macro_f1", "auc"):
            assert 0.0 <= row[metric] <= 1.0, (row["model"], metric)
            low, high = row["ci95"][metric]
            assert 0.0 <= low <= high <= 1.0
        assert 0.0 <= row["threshold"] <= 1.0 and row["train_seconds"] > 0
    for row in result["rows"]:
        assert row["epochs_run"] == 1 and row["epochs_overridden"] and row["weights_used"].startswith("none")
    assert result["ensemble"]["members"] == list(MODELS)
    assert result["test_split"]["n"] == result["rows"][0]["n_test"] > 0
    assert result["machine"]["cpu"] and result["date"]
    markdown = (out / "quality.md").read_text()
    for needle in (*MODELS, "ensemble (soft vote of 2)", "published, official test split", "Kermany",
                   "SYNTHETIC", "epochs overridden", "not directly comparable"):
        assert needle in markdown

    # --reuse: the finished runs are picked up, nothing is trained again; the README copy gets the table.
    again = run_script("quality.py", *common_args, "--reuse", "--update-readme", "--readme", readme)
    assert again.stdout.count("reusing finished run") == len(MODELS)
    reused = json.loads((out / "quality.json").read_text())
    assert [r["run"] for r in reused["rows"]] == [r["run"] for r in result["rows"]]
    section = between(readme.read_text(), "quality")
    assert "| baseline_cnn |" in section and "Generated by `python benchmarks/quality.py" in section
    assert between(readme.read_text(), "speed") == between((PROJECT_ROOT / "README.md").read_text(), "speed")


def test_quality_weights_plan_never_calls_random_init_pretrained(monkeypatch):
    import quality

    monkeypatch.setattr(quality, "keras_cached", lambda model: False)
    monkeypatch.setattr(quality, "imagenet_reachable", lambda timeout=3.0: False)
    plan = quality.plan_weights(["regularized_cnn", "mobilenetv2_frozen", "densenet121_frozen"], [])
    assert plan["mobilenetv2_frozen"] == ("none", quality.OFFLINE)
    assert plan["regularized_cnn"][0] is None
    local = quality.plan_weights(["densenet121_frozen"], ["densenet121=/tmp/w.h5"])
    assert local["densenet121_frozen"][0].endswith("w.h5") and "local file" in local["densenet121_frozen"][1]
    assert quality.plan_weights(["mobilenetv2_finetune"], ["none"])["mobilenetv2_finetune"][1] == "random init (--weights none)"


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
        assert predict[kind]["profile"]["samples"] >= 0
    scale = sections["scale"]["runs"]
    assert [r["images"] for r in scale] == [200, 400]
    assert all(r["peak_rss_mib"] > 0 and r["epoch_images_per_s"] > 0 for r in scale)
    assert scale[1]["cache_mib"] > scale[0]["cache_mib"]
    markdown = (out / "speed.md").read_text()
    assert "p95 <= 150 ms" in markdown and "input pipeline images/s" in markdown and "scale: peak memory" in markdown
    assert result["machine"]["cpu"] and result["targets"]["page_s"] == 1.5
    assert not list((tmp_path / "work").iterdir())  # scratch removed


def test_speed_training_and_memory(bench_data, fake_app, tmp_path):
    out, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text((PROJECT_ROOT / "README.md").read_text())
    run_script("speed.py", "--data", bench_data, "--only", "training,memory", "--epochs", 1, "--app", fake_app,
               "--out", out, "--work", tmp_path / "work", "--quiet", "--update-readme", "--readme", readme)
    sections = json.loads((out / "speed.json").read_text())["sections"]
    training = sections["training"]
    assert "error" not in training, training
    assert len(training["seed_recipe"]["per_epoch"]) == 1 and len(training["ours"]["per_epoch"]) == 1
    assert training["seconds_per_epoch_ratio"] > 0 and training["flags_note"] == "--epochs 1"
    assert training["time_to_quality_ratio"] is None or training["time_to_quality_ratio"] > 0
    memory = sections["memory"]
    assert memory["training"]["peak_rss_mib"] == training["ours"]["peak_rss_mib"] > 100
    assert 0 < memory["dashboard"]["peak_rss_mib"] < 8192
    section = between(readme.read_text(), "speed")
    assert "time to the seed recipe's val AUC" in section and "training peak memory" in section
    assert between(readme.read_text(), "quality") == between((PROJECT_ROOT / "README.md").read_text(), "quality")


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


def test_page_discovery_skips_helpers(tmp_path):
    import speed

    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "common.py").write_text("import streamlit as st\n\n@st.cache_data\ndef f():\n    return 1\n")
    (tmp_path / "pages" / "charts.py").write_text("import streamlit as st\n\ndef chart():\n    st.write(1)\n")
    (tmp_path / "pages" / "a.py").write_text("import streamlit as st\nfrom pages.charts import chart\nst.title('A')\n")
    (tmp_path / "app.py").write_text("import streamlit as st\nst.write('home')\n")
    assert speed.discover_pages(tmp_path / "app.py") == ["pages/a.py"]
    (tmp_path / "app.py").write_text('import streamlit as st\nst.navigation([st.Page("pages/a.py")]).run()\n')
    assert speed.discover_pages(tmp_path / "app.py") == ["pages/a.py"]
    assert speed.discover_pages(tmp_path / "elsewhere" / "app.py") == []
