"""Contracts of cxr_core.jobs with real worker processes: one job at a time, a queue that is
never stranded, SIGTERM cancels cleanly at any stage, SIGKILL leaves an 'interrupted' run and a
free lock, and no model.keras appears for a run that did not finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxr_core import jobs
from cxr_core.config import UserError
from cxr_core.registry import default_settings
from cxr_core.store import RunState, RunStore


def tiny_settings(epochs: int):
    settings = default_settings("baseline_cnn")
    settings.epochs, settings.image_size, settings.batch_size = epochs, 48, 16
    settings.augment, settings.early_stopping_patience = False, 0  # a long job stays long
    return settings


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def raw_status(store: RunStore, run_id: str) -> dict:
    try:
        return json.loads((store.root / run_id / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def epoch_reached(store, run_id, epoch=1):
    return lambda: raw_status(store, run_id).get("epoch", 0) >= epoch


def visible_models(run_path: Path) -> list[str]:
    return [p.name for p in run_path.iterdir() if p.suffix == ".keras" and not p.name.startswith(".")]


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def busy(demo_dir, tmp_path_factory):
    """A worker process in the middle of a long training run: (store, run_id, worker)."""
    store = RunStore(tmp_path_factory.mktemp("busy_runs"))
    run_id = jobs.submit(tiny_settings(epochs=400), demo_dir, store, start=False)
    worker = jobs.spawn_worker(store)
    try:
        wait_for(epoch_reached(store, run_id), 90, "the first epoch")
        yield store, run_id, worker
    finally:
        stop(worker)


def test_second_launch_is_refused_while_a_job_runs(busy, demo_dir, cli):
    store, run_id, worker = busy
    before = sorted(p.name for p in store.root.iterdir())
    assert jobs.worker_running(store)
    assert jobs.spawn_worker(store) is None
    with pytest.raises(UserError, match=f"already running \\(run {run_id}\\)"):
        jobs.work(store)
    with pytest.raises(UserError, match="already running"):
        with jobs.worker_lock(store):
            pass

    train = cli("train", "--data", demo_dir, "--model", "baseline_cnn", "--epochs", 1, "--image-size", 48, "--runs", store.root,
                timeout=120)
    assert train.returncode == 2
    assert train.stderr.strip().splitlines() == [
        f"error: a training job is already running (run {run_id}); wait for it or stop it first"]
    worker2 = cli("worker", "--runs", store.root, timeout=120)
    assert worker2.returncode == 2 and "already running" in worker2.stderr and "Traceback" not in worker2.stderr

    assert sorted(p.name for p in store.root.iterdir()) == before  # no run folder was created
    assert [r.run_id for r in store.list() if r.state == "running"] == [run_id]
    assert worker.poll() is None and store.get(run_id).state == "running"


def test_sigterm_cancels_cleanly(busy):
    store, run_id, worker = busy
    other = store.new_run({"model": "baseline_cnn"}, "/data", state="queued")
    jobs.cancel(other.run_id, store)  # a cancelled neighbour that must still list fine
    assert jobs.cancel(run_id, store) == RunState.STOPPING == "stopping"
    assert worker.wait(timeout=60) == 0  # the worker ends normally, its queue empty
    run = store.get(run_id)
    assert run.state == "cancelled" and run.status["error"] == "stopped by the user"
    assert visible_models(run.path) == []
    assert len(run.history()) >= 1  # it was really training
    assert {r.run_id: r.state for r in store.list()} == {run_id: "cancelled", other.run_id: "cancelled"}
    assert not jobs.worker_running(store)


def test_sigterm_before_the_first_epoch_cancels_and_the_worker_goes_on(demo_dir, tmp_path):
    """A Stop while images are decoded or the model is built is a cancel too, not a dead worker."""
    store = RunStore(tmp_path)
    first = jobs.submit(tiny_settings(epochs=400), demo_dir, store, start=False)
    second = jobs.submit(tiny_settings(epochs=1), demo_dir, store, start=False)
    worker = jobs.spawn_worker(store)
    try:
        wait_for(lambda: raw_status(store, first).get("state") == "running", 90, "the run to start")
        os.kill(raw_status(store, first)["pid"], signal.SIGTERM)
        assert jobs.wait(first, store, timeout=60) == "cancelled"
        assert raw_status(store, first).get("epoch", 0) <= 1
        assert visible_models(store.run_path(first)) == []
        assert jobs.wait(second, store, timeout=90) == "done"
        assert worker.wait(timeout=30) == 0
    finally:
        stop(worker)


def test_sigkill_leaves_an_interrupted_run_and_a_free_lock(demo_dir, tmp_path, cli):
    store = RunStore(tmp_path)
    run_id = jobs.submit(tiny_settings(epochs=400), demo_dir, store, start=False)
    worker = jobs.spawn_worker(store)
    try:
        wait_for(epoch_reached(store, run_id), 90, "the first epoch")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        stop(worker)
    run = store.get(run_id)
    assert run.state == "interrupted" and "died" in run.error
    assert visible_models(run.path) == []
    assert not (run.path / "model.keras").exists()
    assert {r.run_id: r.state for r in store.list()} == {run_id: "interrupted"}
    # The kernel released the lock with the process: a new worker starts (and finds nothing to do).
    assert not jobs.worker_running(store)
    again = cli("worker", "--runs", store.root, timeout=60)
    assert again.returncode == 0, again.stderr
    assert store.get(run_id).state == "interrupted"  # an interrupted run is not retried behind one's back


def test_queued_runs_train_one_at_a_time_and_are_never_stranded(demo_dir, tmp_path, project_root):
    """Runs submitted (as the dashboard does) while a CLI train holds the lock start no worker
    of their own; when the CLI run ends they are trained, one after another, by one worker."""
    store = RunStore(tmp_path)
    train = subprocess.Popen([sys.executable, "-m", "cxr_core", "train", "--data", str(demo_dir), "--model", "baseline_cnn",
                              "--epochs", "2", "--image-size", "48", "--no-augment", "--runs", str(store.root)],
                             cwd=project_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cli_run = wait_for(lambda: [r.run_id for r in store.list() if r.state == "running"], 90, "the CLI run")[0]
        ids = [jobs.submit(tiny_settings(epochs=1), demo_dir, store) for _ in range(3)]
        assert jobs.cancel(ids[1], store) == "cancelled"  # still queued: dropped without a signal
        assert store.get(ids[1]).state == "cancelled"
        ids = [cli_run, *ids]

        most_running, deadline = 0, time.time() + 180
        while time.time() < deadline:
            states = [raw_status(store, r).get("state") for r in ids]
            most_running = max(most_running, states.count("running"))
            if all(state not in ("queued", "running") for state in states):
                break
            time.sleep(0.05)
        out, err = train.communicate(timeout=60)
    finally:
        stop(train)
    assert train.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == cli_run
    a, b, dropped, c = (raw_status(store, r) for r in ids)
    assert [a["state"], b["state"], c["state"]] == ["done", "done", "done"], (a, b, c)
    assert most_running == 1
    assert a["finished"] <= b["started"] and b["finished"] <= c["started"]
    assert b["pid"] == c["pid"] != a["pid"]  # one worker, started after the CLI run, trained both
    assert dropped["state"] == "cancelled" and "started" not in dropped
    assert not (store.run_path(ids[2]) / "history.json").exists()
    wait_for(lambda: not jobs.worker_running(store), 30, "the worker to exit")


def test_a_stuck_queue_gets_a_worker_and_a_fresh_one_is_left_to_start(demo_dir, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    jobs.submit(tiny_settings(1), demo_dir, store, start=False)
    created = min(r.status["created"] for r in jobs.queued(store))
    started = []
    monkeypatch.setattr(jobs, "spawn_worker", lambda s: started.append(s.root) or object())
    assert jobs.keep_queue_moving(store, now=created + 1) is False and started == []  # its worker may be starting
    assert jobs.keep_queue_moving(store, now=created + jobs.WORKER_START_GRACE_S + 1) is True
    assert started == [store.root]
    with jobs.worker_lock(store):  # a worker holds the lock: nothing to start
        assert jobs.keep_queue_moving(store, now=created + 3600) is False
    assert len(started) == 1


def test_a_worker_that_ends_is_reaped_without_anyone_waiting(tmp_path):
    """The server never waits on the worker it starts: its exit status is read anyway, so no zombie
    stays behind for as long as the server lives."""
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    worker = jobs.spawn_worker(store)  # an empty queue: it exits at once
    wait_for(lambda: worker.returncode is not None, 60, "the worker to exit and be reaped")
    assert worker.returncode == 0
    assert not Path(f"/proc/{worker.pid}").exists() or not os.path.isdir("/proc/self")  # gone, not a zombie
