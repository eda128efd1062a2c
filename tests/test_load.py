"""Load: while a training job runs in a background worker process, several threads (as several
dashboard sessions would) predict with a finished run at once; all answer correctly, none fails,
and the training still finishes 'done'."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd

from cxr_core import jobs
from cxr_core.config import CLASSES, default_settings
from cxr_core.inference import load_run, predict_image
from cxr_core.store import RunStore

THREADS = 6
PER_THREAD = 8


def test_predictions_during_training(tiny_run, demo_dir, tmp_path):
    store, run_id = tiny_run
    loaded = load_run(run_id, store)
    files = sorted(str(p) for p in (demo_dir / "test").rglob("*.jpeg"))[: THREADS * PER_THREAD]
    assert len(files) >= THREADS * 2
    reference = {f: predict_image(loaded, f)["probability"] for f in files}

    train_store = RunStore(tmp_path / "runs")
    settings = default_settings("baseline_cnn")
    settings.epochs, settings.image_size, settings.batch_size = 30, 48, 16
    settings.augment, settings.early_stopping_patience = False, 0
    training = jobs.submit(settings, demo_dir, train_store, start=False)
    worker = jobs.spawn_worker(train_store)
    try:
        deadline = time.time() + 120
        status_path = train_store.run_path(training) / "status.json"
        while time.time() < deadline:
            try:
                if json.loads(status_path.read_text()).get("epoch", 0) >= 1:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        assert train_store.get(training).state == "running"

        results: list[dict] = []
        errors: list[BaseException] = []
        start = threading.Barrier(THREADS)

        def session(index: int) -> None:
            mine = files[index::THREADS]
            try:
                start.wait()
                for k, path in enumerate(mine):
                    # Half the "uploads" arrive as bytes, as st.file_uploader gives them.
                    source = path if k % 2 else Path(path).read_bytes()
                    results.append(predict_image(loaded, source, name=path))
            except BaseException as error:  # noqa: BLE001 - any failure is the finding
                errors.append(error)

        threads = [threading.Thread(target=session, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a prediction hung"
        assert errors == []
        assert len(results) == len(files)
        for result in results:
            assert abs(result["probability"] - reference[result["file"]]) < 1e-5  # no cross-talk between threads
            assert result["label"] == CLASSES[int(result["probability"] >= loaded.threshold)]
        assert train_store.get(training).state == "running"  # the predictions overlapped the training

        assert jobs.wait(training, train_store, timeout=240) == "done"
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    run = train_store.get(training)
    assert run.has_model and len(run.history()) == settings.epochs
    assert isinstance(train_store.split(training), pd.DataFrame)
