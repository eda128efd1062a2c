"""Start, queue, watch and stop training jobs, each in its own process.

One worker process at a time trains the queued runs, oldest first; it holds
an exclusive `flock` on RUNS/.worker.lock for its whole life. The kernel
releases that lock when the process dies, even on SIGKILL, so a crashed
worker never blocks the queue, and two workers can never train at once (the
machine has few cores; two jobs would each take twice as long).

    submit(settings, data_dir)    queue a run and make sure a worker is running
    cancel(run_id)                a queued run is dropped; a running one gets SIGTERM
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .config import PROJECT_ROOT, TrainSettings, UserError
from .store import RunStore

LOCK_NAME = ".worker.lock"


@contextmanager
def worker_lock(store: RunStore, wait: bool = False):
    """Hold the single-worker lock, or raise UserError if another worker has it."""
    store.root.mkdir(parents=True, exist_ok=True)
    handle = open(store.root / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            running = [r.run_id for r in store.list() if r.state == "running"]
            what = f"run {running[0]}" if running else "another run"
            raise UserError(f"a training job is already running ({what}); wait for it or stop it first") from None
        yield
    finally:
        handle.close()


def worker_running(store: RunStore) -> bool:
    try:
        with worker_lock(store):
            return False
    except UserError:
        return True


def queued(store: RunStore) -> list:
    return sorted((r for r in store.list() if r.state == "queued"), key=lambda r: r.status.get("created", 0))


def work(store: RunStore, echo=print) -> list[str]:
    """The worker loop: train queued runs until none are left. Returns the run ids trained."""
    from .train import run_job

    trained = []
    with worker_lock(store):
        while True:
            waiting = queued(store)
            if not waiting:
                return trained
            run_id = waiting[0].run_id
            echo(f"training {run_id}")
            state = run_job(run_id, store, echo)
            trained.append(run_id)
            if state == "cancelled" and os.environ.get("CXR_WORKER_STOP_ON_CANCEL", "0") == "1":
                return trained


def spawn_worker(store: RunStore) -> subprocess.Popen | None:
    """Start a background worker unless one is running. Its output goes to RUNS/worker.log."""
    if worker_running(store):
        return None
    log = open(store.root / "worker.log", "ab")
    command = [sys.executable, "-m", "cxr_core", "worker", "--runs", str(store.root)]
    # A new session: the worker outlives a Streamlit rerun or a server restart.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=PROJECT_ROOT, env=env, start_new_session=True)


def submit(settings: TrainSettings, data_dir, store: RunStore | None = None, *, start: bool = True) -> str:
    """Queue one run; returns its id. It starts at once when no other job runs."""
    store = store or RunStore()
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.exists():
        raise UserError(f"data folder {data_dir} does not exist")
    run = store.new_run(settings.to_dict(), str(data_dir), state="queued")
    if start:
        spawn_worker(store)
    return run.run_id


def cancel(run_id: str, store: RunStore | None = None) -> str:
    """Stop a run: queued runs are marked cancelled; a running one is sent SIGTERM."""
    store = store or RunStore()
    run = store.get(run_id)
    if run.state == "queued":
        store.set_status(run_id, state="cancelled", finished=time.time(), error="removed from the queue")
        return "cancelled"
    if run.state == "running":
        try:
            os.kill(int(run.status["pid"]), 15)
        except ProcessLookupError:
            pass
        return "stopping"
    raise UserError(f"run {run_id} is {run.state}, not queued or running; nothing to stop")


def wait(run_id: str, store: RunStore, timeout: float = 600.0, poll: float = 0.5) -> str:
    """Block until a run leaves queued/running (for scripts and tests); returns its state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = store.get(run_id).state
        if state not in ("queued", "running"):
            return state
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f}s")
