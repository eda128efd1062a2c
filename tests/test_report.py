"""Contracts of cxr_core.report: one self-contained, offline HTML file per set of runs, with settings,
intervals, figures and the most confident mistakes, and errors a person can act on."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from cxr_core import report
from cxr_core.config import UserError
from cxr_core.store import RunStore


@pytest.fixture
def private(tiny_run, tmp_path) -> tuple[RunStore, str]:
    """A copy of the tiny run in a store of its own, for tests that change its files: (store, run_id)."""
    store, run_id = tiny_run
    own = RunStore(tmp_path / "runs")
    shutil.copytree(store.run_path(run_id), own.root / run_id)
    return own, run_id


def test_the_report_is_one_offline_html_file_with_the_figures(tiny_run):
    store, run_id = tiny_run
    html = report.build_report([run_id], store)
    assert not re.search(r"<script[^>]*src=[\"']?https?://", html)  # plotly.js inlined, no CDN
    assert html.count('class="plotly-graph-div"') >= 3 and "Plotly.newPlot" in html
    from plotly.offline import get_plotlyjs

    assert len(html) < 1.5 * len(get_plotlyjs())  # plotly.js once, not once per figure
    assert run_id in html and "SYNTHETIC" in html and "data:image/png;base64," in html
    evaluation = store.get(run_id).evaluation("test")
    assert f"{evaluation['accuracy']:.3f} [" in html  # the interval beside the value
    assert re.search(r"Made \d{4}-\d\d-\d\d", html)



def test_the_mistakes_are_the_runs_own_images_and_a_moved_folder_is_said_not_fatal(private, tmp_path):
    store, run_id = private
    settings_path = store.run_path(run_id) / "settings.json"
    evaluation_path = store.run_path(run_id) / "evaluation_test.json"
    # At threshold 0 every NORMAL image is a false alarm, however well the run trained.
    evaluation_path.write_text(json.dumps(dict(json.loads(evaluation_path.read_text()), threshold=0.0)))
    html = report.build_report([run_id], store)
    assert html.count("<figure><img src=\"data:image/png;base64,") == 4  # the 4 most confident, read from disk
    for path in (settings_path, evaluation_path):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), data_dir=str(tmp_path / "moved"))))
    html = report.build_report([run_id], store)
    assert "<figure><img" not in html
    assert re.search(r"The images cannot be shown: data folder .*moved does not exist", html)


def test_a_run_without_the_evaluation_asked_for_says_how_to_make_it(tiny_run):
    store, run_id = tiny_run
    with pytest.raises(UserError, match=f"run {run_id} has no val evaluation on elsewhere; evaluate it first"):
        report.build_report([run_id], store, split="val", source="elsewhere")
    with pytest.raises(UserError, match="name at least one run"):
        report.build_report([], store)
