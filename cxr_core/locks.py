"""The run store's two locks: one worker at a time, and one "is there room? then queue" at a time.

The worker holds an exclusive `flock` on RUNS/.worker.lock for its whole life; the kernel
releases it when the process dies, even on SIGKILL, so a crashed worker never blocks the
queue. RUNS/.queue.lock makes the queue bound (jobs.check_room) hold between sessions.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager

from .config import UserError
from .store import RunState, RunStore

LOCK_NAME = ".worker.lock"
QUEUE_LOCK_NAME = ".queue.lock"

# Run stores whose worker lock this process holds: a run it submits there, it trains itself now.
_training_here: set[str] = set()


def acquire(store: RunStore, wait: bool = False):
    """The locked lock file's handle, or None if another process holds the lock."""
    store.root.mkdir(parents=True, exist_ok=True)
    handle = open(store.root / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


def busy(store: RunStore) -> UserError:
    running = [r.run_id for r in store.list() if r.state == RunState.RUNNING]
    what = f"run {running[0]}" if running else "another run"
    return UserError(f"a training job is already running ({what}); wait for it or stop it first")


@contextmanager
def worker_lock(store: RunStore, wait: bool = False):
    """Hold the single-worker lock, or raise UserError if another worker has it."""
    handle = acquire(store, wait)
    if handle is None:
        raise busy(store)
    _training_here.add(str(store.root.resolve()))
    try:
        yield
    finally:
        _training_here.discard(str(store.root.resolve()))
        handle.close()


def worker_running(store: RunStore) -> bool:
    handle = acquire(store)
    if handle is None:
        return True
    handle.close()
    return False


@contextmanager
def queue_lock(store: RunStore):
    """Serialise "is there room? then queue" between sessions and processes, so the bound holds."""
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / QUEUE_LOCK_NAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def trains_here(store: RunStore) -> bool:
    """True while this process holds `store`'s worker lock: a run it submits there, it trains itself now."""
    return str(store.root.resolve()) in _training_here
