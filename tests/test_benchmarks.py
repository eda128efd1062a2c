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


def test_classroom_figures_are_recomputed_from_the_walks_and_the_report_says_what_was_measured():
    import classroom

    walks = [{"steps": {"Home": 1.0, "Dataset": 2.0}, "error": None}, {"steps": {"Home": 1.5}, "error": "Dataset: x"}]
    figures = classroom.summarize(walks, cpu_s=1.5, cores=2)
    assert figures["page_views"] == 3 and figures["errors"] == 1
    assert figures["server_cpu_s_per_view"] == 0.5 and figures["capacity_views_per_s_per_core"] == 2.0
    assert figures["per_step"]["Home"] == {"p50_s": 1.25, "p95_s": 1.48, "max_s": 1.5, "n": 2}
    assert classroom.summarize([], cpu_s=1.0, cores=2)["server_cpu_s_per_view"] is None
    result = {"sessions": 2, "date": "2026-11-30 10:00:00 UTC", "git": {"commit": "a" * 40}, "machine": "a CPU",
              "command": "python benchmarks/classroom.py --sessions 2", "server_cpu_s": 1.5, "peak_rss_mb": 300.0,
              "training_under_load_batches_per_s": 0.03, "training_alone_batches_per_s": 0.9, **figures}
    text = classroom.render(result)
    assert "| server CPU seconds per page view | 0.50 s (1.5 s for 3 views) | server |" in text
    assert "0.03 while the class worked vs 0.90 alone just before (3% of its speed alone)" in text
    assert text.startswith("Measured on 2026-11-30 at commit aaaaaaaaaa")


def test_the_stored_classroom_result_renders_what_was_measured(tmp_path):
    out, root = tmp_path / "results", docs_copy(tmp_path)
    out.mkdir()
    stored = json.loads((BENCHMARKS / "results" / "classroom.json").read_text())
    (out / "classroom.json").write_text(json.dumps(stored))
    run_script("classroom.py", "--render", "--out", out, "--update-docs", "--docs-root", root)
    text = section(root, "classroom")
    share = stored["training_under_load_batches_per_s"] / stored["training_alone_batches_per_s"]
    assert f"({share:.0%} of its speed alone)" in text and "is fine" not in text
    assert f"{stored['server_cpu_s'] / stored['page_views']:.2f} s ({stored['server_cpu_s']} s for" in text


# ---------------------------------------------------------------- speed


FAKE_APP = {
    "app.py": 'import streamlit as st\n\nst.navigation([st.Page("views/runs.py", title="Runs"), '
              'st.Page("views/compare.py", title="Compare")]).run()\n',
    "views/helpers.py": "from cxr_core.store import RunStore\n\n\ndef run_ids():\n"
                        "    return [r.run_id for r in RunStore().finished()]\n",
    "views/runs.py": "import streamlit as st\nfrom views.helpers import run_ids\n\nst.title('Runs')\n"
                     "st.write(len(run_ids()))\n",
    "views/compare.py": "import streamlit as st\nfrom views.helpers import run_ids\n\nst.title('Compare')\n"
                        "ids = run_ids()\nchosen = st.multiselect('Runs', ids, default=ids[:2], "
                        "format_func=lambda r: 'run ' + r)\nst.write(len(chosen))\n",
}


@pytest.fixture(scope="module")
def speed_run(bench_data, tmp_path_factory):
    """Every section once, at the smallest settings that still run each path: (speed.json, docs root)."""
    tmp = tmp_path_factory.mktemp("speed")
    for name, text in FAKE_APP.items():  # a stand-in dashboard: two pages, one with a run multiselect
        (tmp / "app" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "app" / name).write_text(text)
    root = docs_copy(tmp)
    run_script("speed.py", "--data", bench_data, "--test-data", bench_data, "--epochs", 1, "--image-size", 32,
               "--repeats", 1, "--predict-models", "regularized_cnn", "--calls", 3, "--app", tmp / "app" / "app.py",
               "--out", tmp / "results", "--work", tmp / "work", "--quiet", "--update-docs", "--docs-root", root,
               timeout=900)
    assert not list((tmp / "work").iterdir())  # scratch removed
    return json.loads((tmp / "results" / "speed.json").read_text()), root


def test_speed_training_figures_come_from_each_runs_own_records(speed_run, bench_data):
    result, root = speed_run
    training = result["sections"]["training"]
    assert "error" not in training, training
    dev = os.path.relpath(bench_data, PROJECT_ROOT)
    assert training["flags_note"] == f"--epochs 1 --image-size 32 --repeats 1 --test-data {dev}"
    runs = {r["side"]: r for r in training["runs"]}
    assert list(runs) == ["seed_regularized", "ours"] == training["order"]
    for run in runs.values():
        final, cm = run["final"], np.array(run["final"]["confusion_matrix"])
        assert final["accuracy"] == pytest.approx(np.trace(cm) / cm.sum()) and cm.sum() == final["n"]
        assert run["seconds_per_epoch"] == pytest.approx(np.median([e["seconds"] for e in run["per_epoch"]]))
        assert run["image_size"] == 32 and [e["epoch"] for e in run["per_epoch"]] == [1]
    assert runs["seed_regularized"]["final"]["threshold"] == 0.5  # the study's fixed threshold
    ours, study = runs["ours"], runs["seed_regularized"]
    speed = section(root, "speed")
    assert (f"{ours['total_wall_s']:.0f} s vs {study['total_wall_s']:.0f} s" in speed
            and f"accuracy {ours['final']['accuracy']:.3f} vs {study['final']['accuracy']:.3f}" in speed)
    assert (f"{ours['peak_rss_mib'] / 1024:.2f} GiB vs {study['peak_rss_mib'] / 1024:.2f} GiB" in speed
            and "1 repeat" in speed and "time to quality" not in speed)
    assert section(root, "classroom") == section(PROJECT_ROOT, "classroom")


def test_speed_pipeline_and_predict_rates_match_their_counts(speed_run, bench_data):
    sections = speed_run[0]["sections"]
    pipeline = sections["pipeline"]
    for key in ("seed_loader", "ours_cold", "ours_warm"):
        assert pipeline[key]["images_per_s"] == pytest.approx(pipeline["images"] / pipeline[key]["seconds"])
    rates = {key: pipeline[key]["images_per_s"] for key in ("seed_loader", "ours_warm")}
    assert pipeline["warm_vs_seed"] == pytest.approx(rates["ours_warm"] / rates["seed_loader"])
    predict = sections["predict"]["models"]["regularized_cnn"]
    for kind in ("predict", "gradcam"):
        calls = predict[kind]["calls_ms"]
        assert len(calls) == 3 and predict[kind]["p95_ms"] == pytest.approx(np.percentile(calls, 95))
    for section_ in sections.values():
        assert section_["git"] == speed_run[0]["git"] and section_["command"].startswith("python benchmarks/speed.py")
    assert speed_run[0]["data"] == os.path.relpath(bench_data, PROJECT_ROOT)
    assert str(PROJECT_ROOT) not in json.dumps(speed_run[0])  # results name folders relative to the project


def test_speed_pages_and_dashboard_memory_on_a_stand_in_app(speed_run):
    pages, memory = speed_run[0]["sections"]["pages"], speed_run[0]["sections"]["memory"]
    assert pages["runs_in_store"] == 10
    assert [p["page"] for p in pages["pages"]] == ["(default page of app.py)", "views/runs.py", "views/compare.py"]
    assert [p.get("title") for p in pages["pages"]] == ["Runs", "Runs", "Compare"]
    assert all(not p["exceptions"] for p in pages["pages"])
    assert pages["compare"]["runs_selected"] == pages["compare"]["selected_after_run"] == 5
    dashboard = memory["dashboard"]
    assert [v["page"] for v in dashboard["visited"]] == ["(landing)", "Runs", "Compare"]
    assert dashboard["peak_rss_mib"] >= dashboard["rss_at_end_mib"] > 50


def test_the_stored_speed_result_renders_its_true_repeat_count(tmp_path):
    out, root = tmp_path / "results", docs_copy(tmp_path)
    out.mkdir()
    stored = json.loads((BENCHMARKS / "results" / "speed.json").read_text())
    (out / "speed.json").write_text(json.dumps(stored))
    run_script("speed.py", "--render", "--out", out, "--update-docs", "--docs-root", root)
    speed = section(root, "speed")
    runs = {r["side"]: r for r in stored["sections"]["training"]["runs"]}
    repeats = len({r["repeat"] for r in runs.values()})
    assert f"{repeats} repeat" in speed and "three interleaved" not in speed and "time to quality" not in speed.lower()
    ours, study = runs["ours"], runs["seed_regularized"]
    assert f"{ours['total_wall_s']:.0f} s vs {study['total_wall_s']:.0f} s" in speed
    assert f"vs {study['peak_rss_mib'] / 1024:.2f} GiB" in speed  # the study's peak beside ours, same runs


def test_page_discovery_reads_the_st_page_calls_of_app_py(tmp_path):
    from speed_sections import discover_pages

    (tmp_path / "pages").mkdir()
    for name in ("a.py", "b.py", "helpers.py"):
        (tmp_path / "pages" / name).write_text(f"import streamlit as st\nst.title('{name}')\n")
    app = tmp_path / "app.py"
    app.write_text("import streamlit as st\nst.write('home')\n")
    assert discover_pages(app) == []  # no st.Page: nothing is guessed from the folder
    app.write_text("import streamlit as st\nfrom streamlit import Page\n\ndef home():\n    st.title('Home page')\n\n"
                   "b = Page('pages/b.py', title='B')\n"
                   "st.navigation([st.Page(home, default=True), st.Page('pages/a.py'), b,\n"
                   "               st.Page('pages/missing.py')]).run()\n")
    assert discover_pages(app) == ["pages/b.py", "pages/a.py", "pages/missing.py"]
    pages = common.app_pages(app)
    assert [(p["title"], p["heading"], p["default"]) for p in pages] == [
        ("B", "b.py", False), ("home", "Home page", True), ("a", "a.py", False), ("missing", None, False)]
    assert discover_pages(tmp_path / "elsewhere" / "app.py") == []


def test_page_discovery_on_the_real_dashboard():
    import re

    from speed_sections import discover_pages

    app = PROJECT_ROOT / "app.py"
    named = re.findall(r"""st\.Page\(\s*["']([^"']+\.py)["']""", app.read_text())
    assert named and discover_pages(app) == named
    assert all((PROJECT_ROOT / page).is_file() for page in named)
    titles = re.findall(r"""st\.Page\([^)]*\btitle=["']([^"']+)["']""", app.read_text())
    assert sorted(p["title"] for p in common.app_pages(app)) == sorted(titles)


def test_speed_entry_script_lists_a_module_for_every_section():
    import importlib

    import speed

    assert list(speed.SECTIONS) == ["pipeline", "training", "predict", "pages", "memory"]
    for module, function, _ in [*speed.SECTIONS.values(), *((m, f, "") for m, f in speed.CHILDREN.values())]:
        assert callable(getattr(importlib.import_module(module), function))


def test_the_recorded_command_names_folders_relative_to_the_project():
    script = str(PROJECT_ROOT / "benchmarks" / "speed.py")
    elsewhere = str(PROJECT_ROOT.parent / "shared" / "data")
    line = common.command_line([script, "--data", elsewhere, f"--out={elsewhere}", "--only", "training"])
    assert line == ("python benchmarks/speed.py --data ../shared/data --out=../shared/data --only training")
    assert str(PROJECT_ROOT.parent) not in line


@pytest.mark.parametrize("tn, fp, fn, tp", [(80, 40, 6, 190), (117, 0, 3, 196), (60, 57, 1, 198)])
def test_macro_f1_from_the_rates_is_sklearns_on_the_same_confusion_matrix(tn, fp, fn, tp):
    from sklearn.metrics import f1_score
    from speed_report import macro_f1_from_rates

    y_true = np.array([0] * (tn + fp) + [1] * (fn + tp))
    y_pred = np.array([0] * tn + [1] * fp + [0] * fn + [1] * tp)
    n = tn + fp + fn + tp
    derived = macro_f1_from_rates((tn + tp) / n, tp / (tp + fn), tn / (tn + fp))
    assert derived == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert macro_f1_from_rates(0.9, 0.9, 0.9) is None and macro_f1_from_rates(None, 0.9, 0.8) is None


def test_spread_over_repeats():
    from speed_report import spread_text

    s = common.spread([3.0, 1.0, 2.0, None])
    assert (s["median"], s["min"], s["max"], s["n"], s["missing"]) == (2.0, 1.0, 3.0, 4, 1)
    assert spread_text([3.0, 1.0, 2.0, None], 1, " s") == "2.0 s [1.0, 3.0]"
    assert spread_text([4.0], 0, " s") == "4 s" and spread_text([None]) == "n/a"


def test_the_tree_sampler_sees_a_child_and_its_cpu_time():
    import subprocess as sp

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)"
    parent = sp.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"])
    try:
        with common.TreeSampler(parent.pid, interval=0.05) as sampler:
            import time

            deadline = time.time() + 30
            while sampler.cpu_s < 0.5 and time.time() < deadline:
                time.sleep(0.1)
        assert sampler.cpu_s >= 0.5 and sampler.peak_rss_mib > 2 * sampler.root.memory_info().rss / 2**20 - 1
    finally:
        for child in sampler.root.children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()



def test_the_servers_health_is_asked_past_any_proxy(monkeypatch):
    """A proxy in the environment (or one a test that simulates being offline left in urlopen's shared
    opener) must not stand between the tests and the dashboard on loopback."""
    import http.server
    import threading
    import urllib.request

    import dashboard

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  the handler's name is http.server's
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/_stcore/health"
    try:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # the discard port: every request refused
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setattr(urllib.request, "_opener", None)
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)  # the shared opener now holds the refusing proxy
        with dashboard.LOOPBACK.open(url, timeout=5) as response:
            assert response.status == 200 and response.read() == b"ok"
    finally:
        server.shutdown()
        server.server_close()
