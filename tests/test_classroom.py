"""The classroom benchmark, small: 2 Chromium sessions through every page app.py names and a Predict
upload on the demo set while a run trains. Every session must finish without an error; the reported
figures are recomputed from the walks it stored; times are printed, not asserted (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from dashboard import CHROMIUM

import common

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")


def test_two_students_walk_every_page_while_a_model_trains(project_root, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/classroom.py", "--sessions", "2", "--baseline-s", "3",
                           "--ramp-s", "1", "--room-readers", "12", "--room-views", "2", "--room-hold-s", "6",
                           "--out", str(tmp_path)], cwd=project_root, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "classroom.json").read_text())
    print(json.dumps({k: v for k, v in result.items() if k != "walks"}))
    assert result["errors"] == 0, result["error_samples"]
    # The walk is app.py's st.Page list, the default page first: a new page is walked without a change here.
    pages = common.app_pages(project_root / "app.py")
    assert result["pages"] == [p["title"] for p in sorted(pages, key=lambda p: not p["default"])]
    assert {step: v["n"] for step, v in result["per_step"].items()} == {
        **{title: 2 for title in result["pages"]}, "Predict upload": 2}
    # Each figure from the raw walks and the server tree's CPU seconds.
    steps = [s for walk in result["walks"] for s in walk["steps"].values()]
    assert result["page_views"] == len(steps) == 2 * (len(pages) + 1)
    assert result["per_step"]["Predict upload"]["max_s"] == round(max(w["steps"]["Predict upload"]
                                                                      for w in result["walks"]), 2)
    assert result["server_cpu_s_per_view"] == pytest.approx(result["server_cpu_s"] / len(steps), abs=0.01)
    assert result["peak_rss_mb"] > 0 and result["training_alone_batches_per_s"] > 0
    assert result["training_under_load_batches_per_s"] is not None
    assert "while the class worked vs" in (tmp_path / "classroom.md").read_text()
    # The class view of a set with 12 readers: opened by 2 sessions, then one tab held through a refresh.
    side = result["room"]
    assert (side["readers"], side["views"], side["errors"], side["refreshes"]) == (12, 2, 0, 1)
    assert side["cpu_s_per_view"] == pytest.approx(side["cpu_s"] / 2, abs=0.01)
    assert side["cpu_s_per_refresh"] == pytest.approx(side["hold_cpu_s"], abs=0.01)
    assert "class view of a reading set with 12 readers" in (tmp_path / "classroom.md").read_text()
