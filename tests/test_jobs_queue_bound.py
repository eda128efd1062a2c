"""The bounded queue: at most CXR_MAX_QUEUED (default 8) runs and scorings wait for the worker.

No test here trains: runs are queued with start=False (no worker), "finished" runs are stand-ins
with an empty model file, and the CLI's `train` runs with its training step replaced.
"""

from __future__ import annotations

import sys
import types

import pytest

from cxr_core import config, jobs
from cxr_core.config import UserError
from cxr_core.registry import default_settings
from cxr_core.store import RunState, RunStore


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs")


def queue_runs(store: RunStore, data_dir, count: int) -> list[str]:
    return [jobs.submit(default_settings("baseline_cnn"), data_dir, store, start=False) for _ in range(count)]


def finished_run(store: RunStore, data_dir) -> str:
    """A run the store reads as done (its model file exists); scoring it is only queued, never run."""
    run = store.new_run(default_settings("regularized_cnn").to_dict(), str(data_dir), state=RunState.DONE)
    (run.path / "model.keras").write_bytes(b"")
    return run.run_id


def test_max_queued_reads_the_environment(monkeypatch):
    monkeypatch.delenv("CXR_MAX_QUEUED", raising=False)
    assert config.max_queued() == 8
    monkeypatch.setenv("CXR_MAX_QUEUED", "3")
    assert config.max_queued() == 3
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv("CXR_MAX_QUEUED", bad)
        with pytest.raises(UserError, match="CXR_MAX_QUEUED"):
            config.max_queued()


def test_the_ninth_waiting_run_is_refused_with_one_line(store, demo_dir, monkeypatch):
    monkeypatch.delenv("CXR_MAX_QUEUED", raising=False)
    queue_runs(store, demo_dir, 8)
    with pytest.raises(UserError) as refused:
        jobs.submit(default_settings("baseline_cnn"), demo_dir, store, start=False)
    message = str(refused.value)
    assert "\n" not in message and "queue is full" in message and "8" in message and "CXR_MAX_QUEUED" in message
    assert len(store.list()) == 8 and len(jobs.queued(store)) == 8

    # A run leaving the queue makes room again.
    jobs.cancel(jobs.queued(store)[0].run_id, store)
    jobs.submit(default_settings("baseline_cnn"), demo_dir, store, start=False)
    assert len(jobs.queued(store)) == 8


def test_running_and_finished_runs_do_not_count(store, demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "1")
    finished_run(store, demo_dir)
    store.new_run(default_settings("baseline_cnn").to_dict(), str(demo_dir), state=RunState.CANCELLED)
    queue_runs(store, demo_dir, 1)
    with pytest.raises(UserError, match="queue is full"):
        queue_runs(store, demo_dir, 1)


def test_runs_and_scorings_share_the_bound(store, demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "3")
    done = finished_run(store, demo_dir)
    first = jobs.submit_evaluation(done, demo_dir, store, start=False)
    queue_runs(store, demo_dir, 1)
    jobs.submit_evaluation(done, demo_dir, store, start=False, occlusion="lungs")
    # Full: neither a run nor a new scoring may wait.
    with pytest.raises(UserError, match="queue is full"):
        queue_runs(store, demo_dir, 1)
    with pytest.raises(UserError, match="queue is full"):
        jobs.submit_evaluation(done, demo_dir, store, start=False, occlusion="outside")
    # An identical waiting request is not a new one: it is neither refused nor queued twice.
    assert jobs.submit_evaluation(done, demo_dir, store, start=False) == first
    assert len(jobs.queued_evaluations(store)) == 2 and len(jobs.queued(store)) == 1


def test_check_room_counts_a_batch(store, demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "6")
    queue_runs(store, demo_dir, 2)
    jobs.check_room(store, 4)
    with pytest.raises(UserError, match="for 5 more"):
        jobs.check_room(store, 5)


def test_a_run_trained_at_once_by_the_lock_holder_is_not_refused(store, demo_dir, monkeypatch):
    monkeypatch.setenv("CXR_MAX_QUEUED", "2")
    queue_runs(store, demo_dir, 2)
    with jobs.worker_lock(store):
        run_id = jobs.submit(default_settings("baseline_cnn"), demo_dir, store, start=False)
    assert store.get(run_id).state == RunState.QUEUED
    # Out of the lock the bound holds again.
    with pytest.raises(UserError, match="queue is full"):
        queue_runs(store, demo_dir, 1)


def test_cli_train_runs_even_when_the_dashboards_queue_is_full(store, demo_dir, monkeypatch, capsys):
    """`python -m cxr_core train` trains in its own process at once: it never waits, so the bound is not for it."""
    from cxr_core.cli import parser

    monkeypatch.setenv("CXR_MAX_QUEUED", "2")
    waiting = set(queue_runs(store, demo_dir, 2))
    trained, workers = [], []
    monkeypatch.setitem(sys.modules, "keras", types.ModuleType("keras"))  # cmd_train imports it; not needed here
    monkeypatch.setattr(jobs, "run_one", lambda run_id, runs, echo: trained.append(run_id) or RunState.DONE)
    monkeypatch.setattr(jobs, "spawn_worker", lambda runs: workers.append(runs.root))
    args = parser().parse_args(["train", "--model", "baseline_cnn", "--epochs", "1", "--data", str(demo_dir),
                                "--runs", str(store.root)])
    assert args.func(args) == 0
    (run_id,) = trained
    assert run_id not in waiting and capsys.readouterr().out.splitlines()[-1] == run_id
    assert workers == [store.root]  # the dashboard's queue is handed to a worker afterwards, as before
