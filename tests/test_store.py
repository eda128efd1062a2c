"""Contracts of cxr_core.store: atomic writes, a listing that survives broken and foreign
folders, dead-process detection, run-id validation, and models loaded only in safe mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from cxr_core.config import UserError
from cxr_core.processes import pid_alive, process_start
from cxr_core.store import OWN, RunStore, atomic_write_csv, atomic_write_json, evaluation_files, occluded_source, split_source


def tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="pneumonia")(x))


def done_run(store: RunStore, model: keras.Model | None = None) -> str:
    run = store.new_run({"model": "baseline_cnn", "image_size": 8}, "/data")
    (model or tiny_model()).save(run.path / "model.keras")
    store.set_status(run.run_id, state="done")
    return run.run_id


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def live_job_process() -> subprocess.Popen:
    """A live process, standing in for a training job."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


# --- atomic writes --------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_files(tmp_path):
    import pandas as pd

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    atomic_write_csv(tmp_path / "b.csv", pd.DataFrame({"a": [1, 2]}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError):
        atomic_write_json(target, {"state": "done", "padding": "x" * 100_000})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_unserialisable_value_keeps_the_old_file(tmp_path):
    target = tmp_path / "history.json"
    atomic_write_json(target, [{"loss": 0.5}])
    with pytest.raises(ValueError):
        atomic_write_json(target, [{"loss": float("nan")}])  # strict JSON: NaN is refused
    assert json.loads(target.read_text()) == [{"loss": 0.5}]
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


# --- listing --------------------------------------------------------------------------------------


def test_listing_survives_broken_and_foreign_folders(tmp_path):
    store = RunStore(tmp_path / "runs")
    good = done_run(store)

    corrupt = store.new_run({"model": "baseline_cnn"}, "/data")
    (corrupt.path / "settings.json").write_text('{"model": "baseline_cnn", ')  # cut short

    no_status = store.new_run({"model": "baseline_cnn"}, "/data")
    (no_status.path / "status.json").unlink()

    odd_status = store.new_run({"model": "baseline_cnn"}, "/data")
    (odd_status.path / "status.json").write_text(json.dumps({"state": "done", "created": "yesterday"}))

    weird_state = store.new_run({"model": "baseline_cnn"}, "/data")
    (weird_state.path / "status.json").write_text(json.dumps(["not", "an", "object"]))

    bad_eval = store.new_run({"model": "baseline_cnn"}, "/data")
    (bad_eval.path / "evaluation_test.json").write_text("[1, 2]")
    (bad_eval.path / "history.json").write_text("{oops")

    (store.root / "notes.txt").write_text("a foreign file")
    (store.root / "holiday photos").mkdir()
    (store.root / "holiday photos" / "beach.jpg").write_bytes(b"\xff\xd8")
    (store.root / ".trash").mkdir()
    (store.root / ".deleted-x-1").mkdir()

    runs = {r.run_id: r for r in store.list()}
    assert set(runs) == {good, corrupt.run_id, no_status.run_id, odd_status.run_id, weird_state.run_id,
                         bad_eval.run_id, "holiday photos"}
    assert runs[good].state == "done"
    for broken in (corrupt.run_id, no_status.run_id, weird_state.run_id, "holiday photos"):
        assert runs[broken].state == "broken" and runs[broken].error
    assert runs[odd_status.run_id].state == "broken"  # "done" but no model.keras
    assert runs[bad_eval.run_id].state == "queued"
    assert runs[bad_eval.run_id].evaluation("test") is None and runs[bad_eval.run_id].history() == []
    # The good run still loads.
    assert store.load_model(good).output_shape == (None, 1)
    assert [r.run_id for r in store.finished()] == [good]


def test_done_run_without_model_is_broken(tmp_path):
    store = RunStore(tmp_path)
    run_id = done_run(store)
    (store.run_path(run_id) / "model.keras").unlink()
    run = store.get(run_id)
    assert run.state == "broken" and "model.keras" in run.error
    with pytest.raises(UserError, match="has no model"):
        store.load_model(run_id)


def test_running_with_dead_pid_is_interrupted(tmp_path):
    store = RunStore(tmp_path)
    run = store.new_run({"model": "baseline_cnn"}, "/data")
    store.set_status(run.run_id, state="running", pid=dead_pid())
    assert store.get(run.run_id).state == "interrupted"
    process = live_job_process()
    try:
        store.set_status(run.run_id, state="running", pid=process.pid)
        assert store.get(run.run_id).status["pid_start"] == process_start(process.pid)  # recorded with the pid
        assert store.get(run.run_id).state == "running"
    finally:
        process.kill()
        process.wait()
    assert store.get(run.run_id).state == "interrupted"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="start times come from /proc (Linux)")
def test_a_recycled_pid_is_not_the_run_that_recorded_it(tmp_path):
    """The job died and the kernel gave its pid to a newer process: same pid, later start time."""
    store = RunStore(tmp_path)
    run = store.new_run({"model": "baseline_cnn"}, "/data")
    newcomer = live_job_process()
    try:
        store.set_status(run.run_id, state="running", pid=newcomer.pid, pid_start=process_start(newcomer.pid) - 1)
        assert store.get(run.run_id).state == "interrupted"
        assert not pid_alive(newcomer.pid, process_start(newcomer.pid) - 1)
        assert pid_alive(newcomer.pid, process_start(newcomer.pid)) and pid_alive(newcomer.pid)
    finally:
        newcomer.kill()
        newcomer.wait()


@pytest.mark.parametrize("run_id", ["../x", "..", ".", "/etc", "a/b", "", "x\n", "..\\x", "a\0b", "~root", "x" * 200])
def test_run_ids_that_leave_the_store_are_refused(tmp_path, run_id):
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    (tmp_path / "x").mkdir()
    for call in (store.run_path, store.get, store.delete, store.load_model, store.split):
        with pytest.raises(UserError, match="invalid run id"):
            call(run_id)


def test_symlinked_run_folder_pointing_outside_is_refused(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, store.root / "sneaky")
    with pytest.raises(UserError, match="invalid run id"):
        store.get("sneaky")


def test_delete_refuses_active_runs_and_removes_finished_ones(tmp_path):
    store = RunStore(tmp_path)
    queued = store.new_run({"model": "baseline_cnn"}, "/data")
    with pytest.raises(UserError, match="queued"):
        store.delete(queued.run_id)
    running = store.new_run({"model": "baseline_cnn"}, "/data")
    job = live_job_process()
    try:
        store.set_status(running.run_id, state="running", pid=job.pid)
        with pytest.raises(UserError, match="running"):
            store.delete(running.run_id)
    finally:
        job.kill()
        job.wait()
    assert queued.path.is_dir() and running.path.is_dir()
    finished = done_run(store)
    store.delete(finished)
    store.delete(running.run_id)  # interrupted now: deletable
    assert {r.run_id for r in store.list()} == {queued.run_id}
    assert sorted(p.name for p in tmp_path.iterdir()) == [queued.run_id]  # no trash left behind


# --- safe model loading ---------------------------------------------------------------------------


def test_lambda_model_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "lambda_ran"
    inputs = keras.Input((8, 8, 1), name="image")
    # A lambda with a side effect, its path a constant in the bytecode that Keras stores.
    side_effect = eval(f"lambda t: (open({str(marker)!r}, 'a').close(), t)[1]")  # noqa: S307
    x = keras.layers.Lambda(side_effect)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x)))
    store = RunStore(tmp_path / "runs")
    run_id = done_run(store, model)
    marker.unlink()  # building the model above ran the lambda once

    with pytest.raises(UserError, match="cannot be loaded safely"):
        store.load_model(run_id)
    assert not marker.exists(), "the lambda in model.keras was executed"

    # The file really would run code when loaded unsafely: the check above can fail.
    keras.saving.load_model(store.run_path(run_id) / "model.keras", safe_mode=False, compile=False)
    assert marker.exists()


def test_custom_object_from_another_module_is_refused_and_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "module_imported"
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "evil_layers.py").write_text(
        f"open({str(marker)!r}, 'a').close()\nimport keras\nclass Evil(keras.layers.Dense):\n    pass\n")
    monkeypatch.syspath_prepend(str(package))

    store = RunStore(tmp_path / "runs")
    run_id = done_run(store)
    path = store.run_path(run_id) / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense.update(module="evil_layers", class_name="Evil", registered_name="Evil")
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)

    with pytest.raises(UserError, match="cannot be loaded safely"):
        store.load_model(run_id)
    assert not marker.exists() and "evil_layers" not in sys.modules


def test_garbage_model_file_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path)
    run_id = done_run(store)
    (store.run_path(run_id) / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        store.load_model(run_id)


def test_loaded_model_matches_the_saved_one(tmp_path):
    store = RunStore(tmp_path)
    model = tiny_model()
    run_id = done_run(store, model)
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(store.load_model(run_id)(x), model(x), rtol=1e-6)


def test_threshold_and_split_files_that_are_corrupt_are_user_errors(tmp_path):
    store = RunStore(tmp_path)
    run_id = done_run(store)
    assert store.threshold(run_id) == 0.5  # none stored yet: the default
    (store.run_path(run_id) / "threshold.json").write_text("{broken")
    with pytest.raises(UserError, match="threshold.json"):
        store.threshold(run_id)
    with pytest.raises(UserError, match="no split.csv"):
        store.split(run_id)
    (store.run_path(run_id) / "split.csv").write_bytes(b"")
    with pytest.raises(UserError, match="split.csv"):
        store.split(run_id)


def test_source_keys_of_occluded_evaluations():
    assert occluded_source(OWN, "lungs") == "own+occlude-lungs"
    assert occluded_source("chest_xray", None) == "chest_xray"
    assert split_source("chest_xray+occlude-outside") == ("chest_xray", "outside")
    assert split_source(OWN) == (OWN, None)
    assert evaluation_files(RunStore("/tmp").run_path("r"), "test", "own+occlude-lungs")[0].name == \
        "evaluation_test@own+occlude-lungs.json"
