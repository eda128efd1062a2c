"""Shared fixtures: a private cache and run store per test session, the demo
data set, one tiny finished run that many tests read, the project root and
`cli`, which runs `python -m cxr_core` as a person would.

Nothing a test writes lands in the project folder: CXR_CACHE_DIR and
CXR_RUNS_DIR point into pytest's temp folders. TensorFlow's log level is the
engine's (`import cxr_core` sets it), inherited by every child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cxr_core  # noqa: F401  sets TensorFlow's log level before any test imports TensorFlow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "chest_xray"


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The checkout's top folder (app.py, README.md, benchmarks/)."""
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def cli():
    """`cli(*args, timeout=180)`: `python -m cxr_core ARGS` in a child process from the project root,
    its output captured as text (a subprocess.CompletedProcess)."""
    def run(*args, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cxr_core", *map(str, args)], cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture(scope="session", autouse=True)
def private_dirs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    runs = tmp_path_factory.mktemp("runs")
    # A developer's shell may set the teacher key or a queue bound: the suite starts from neither.
    old = {k: os.environ.get(k) for k in ("CXR_CACHE_DIR", "CXR_RUNS_DIR", "CXR_DATA_DIR", "CXR_TEACHER_KEY",
                                          "CXR_MAX_QUEUED")}
    os.environ["CXR_CACHE_DIR"] = str(cache)
    os.environ["CXR_RUNS_DIR"] = str(runs)
    for key in ("CXR_DATA_DIR", "CXR_TEACHER_KEY", "CXR_MAX_QUEUED"):
        os.environ.pop(key, None)
    yield {"cache": cache, "runs": runs}
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small synthetic data set in Kaggle layout (train/ and test/)."""
    from cxr_core.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "chest_xray", n_normal=60, n_pneumonia=60, seed=3, image_size=96)


@pytest.fixture(scope="session")
def tiny_run(demo_dir, tmp_path_factory):
    """One finished regularized_cnn run on the demo set: (store, run_id)."""
    from cxr_core.jobs import submit
    from cxr_core.registry import default_settings
    from cxr_core.store import RunStore
    from cxr_core.train import run_job

    store = RunStore(tmp_path_factory.mktemp("tiny_runs"))
    settings = default_settings("regularized_cnn")
    settings.epochs, settings.image_size, settings.batch_size = 2, 64, 16
    run_id = submit(settings, demo_dir, store, start=False)
    assert run_job(run_id, store, echo=lambda line: None) == "done", store.get(run_id).status
    return store, run_id


@pytest.fixture
def real_data():
    if not (REAL_DATA / "train").is_dir():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def app_page(monkeypatch):
    """`app_page(path, runs_root)`: app.py in Streamlit's AppTest with its run store at `runs_root`, switched
    to the page file `path` (e.g. "pages/3_compare.py"); asserts that no page raised."""
    from streamlit import config as streamlit_config
    from streamlit.testing.v1 import AppTest

    def open_page(path: str, root):
        streamlit_config.set_option("client.showErrorDetails", "full")
        monkeypatch.setenv("CXR_RUNS_DIR", str(root))
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=180).run()
        at.switch_page(path).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page
