"""The predictor process: the same answers as inference.analyse() in-process, errors a page can act on
with their own types, and a process that comes back after a crash and ends when closed."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from cxr_core import images, inference
from cxr_core.config import UserError
from cxr_core.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    handle = Predictor()
    yield handle
    handle.close()


def xray(demo_dir) -> tuple[str, bytes]:
    path = sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    return path.name, path.read_bytes()


def test_the_same_prediction_and_heat_map_as_in_process(predictor, tiny_run, demo_dir):
    store, run_id = tiny_run
    name, content = xray(demo_dir)
    expected = inference.analyse(inference.load_run(run_id, store), content, name)
    result = predictor.analyse(run_id, str(store.root), content, name)
    assert result["label"] == expected["label"] and result["in_distribution"] == expected["in_distribution"]
    assert result["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    assert result["model"] == "regularized_cnn" and result["file"] == name
    np.testing.assert_allclose(result["heatmap"], expected["heatmap"], atol=1e-4)


def test_errors_come_back_with_their_own_type(predictor, tiny_run, tmp_path):
    store, run_id = tiny_run
    with pytest.raises(images.ImageDecodeError, match="bad.jpeg: not an image"):
        predictor.analyse(run_id, str(store.root), b"this is not an X-ray", "bad.jpeg")
    with pytest.raises(UserError, match="nope"):
        predictor.analyse("nope", str(store.root), b"", "x.jpeg")


def test_a_killed_process_is_started_again_and_close_ends_it(tiny_run, demo_dir):
    store, run_id = tiny_run
    name, content = xray(demo_dir)
    handle = Predictor()
    try:
        first = handle.analyse(run_id, str(store.root), content, name)
        os.kill(handle.process.pid, signal.SIGKILL)
        handle.process.wait(timeout=10)
        again = handle.analyse(run_id, str(store.root), content, name)
        assert again["probability"] == pytest.approx(first["probability"], abs=1e-5)
    finally:
        handle.close()
    assert handle.process.poll() is not None
