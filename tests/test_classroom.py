"""The classroom benchmark, small: 5 Chromium sessions through Home, Dataset, Compare and a Predict
upload on the demo set while a run trains. Every session must finish without an error; times are
printed, not asserted (the machine is shared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif((shutil.which("chromium") or shutil.which("chromium-browser")) is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")


def test_five_students_at_once_while_a_model_trains(project_root):
    done = subprocess.run([sys.executable, "benchmarks/classroom.py", "--sessions", "5", "--baseline-s", "3"],
                          cwd=project_root, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    assert {"sessions", "errors", "p50_s", "p95_s", "peak_rss_mb"} <= set(result)
    assert result["sessions"] == 5
    assert result["errors"] == 0, result["error_samples"]
    # Every student reached every page and got a prediction.
    assert {step: values["n"] for step, values in result["per_step"].items()} == {
        "Home": 5, "Dataset": 5, "Compare": 5, "Predict": 5, "Predict upload": 5}
    assert result["peak_rss_mb"] > 0 and result["training_under_load_batches_per_s"] is not None
    # The server's own cost, apart from the browsers': CPU seconds per page view and the capacity it implies.
    assert result["page_views"] == 25
    assert result["server_cpu_s_per_view"] == pytest.approx(result["server_cpu_s"] / 25, abs=0.01)
    assert result["capacity_views_per_s_per_core"] == pytest.approx(1 / result["server_cpu_s_per_view"], rel=0.02)
