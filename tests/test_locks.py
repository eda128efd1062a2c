"""Contracts of cxr_core.locks: one worker per run store, and the holder is known to this process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cxr_core import locks
from cxr_core.config import UserError
from cxr_core.store import RunStore


def test_the_worker_lock_is_exclusive_and_released(tmp_path):
    store = RunStore(tmp_path)
    assert not locks.worker_running(store) and not locks.trains_here(store)
    with locks.worker_lock(store):
        assert locks.trains_here(store) and locks.worker_running(store)
        # Another process cannot take it while this one holds it.
        probe = ("import sys; from cxr_core import locks; from cxr_core.store import RunStore; "
                 "sys.exit(0 if locks.acquire(RunStore(sys.argv[1])) is None else 1)")
        assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 0
        with pytest.raises(UserError, match="already running"):
            with locks.worker_lock(store):
                pass
    assert not locks.worker_running(store) and not locks.trains_here(store)


def _in_a_child(code: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    # A lock that is never released makes its taker wait forever: a child with a time limit turns
    # that into a failure instead of a hung suite.
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_the_queue_lock_can_be_taken_again_once_released(tmp_path):
    code = ("import sys; from cxr_core import locks; from cxr_core.store import RunStore\n"
            "store = RunStore(sys.argv[1])\n"
            "with locks.queue_lock(store):\n    pass\n"
            "with locks.queue_lock(store):\n    print('taken twice')\n")
    done = _in_a_child(code, tmp_path)
    assert done.returncode == 0 and "taken twice" in done.stdout, done.stderr
    assert (tmp_path / locks.QUEUE_LOCK_NAME).exists()


def test_the_queue_lock_excludes_another_process_until_released(tmp_path):
    store = RunStore(tmp_path)
    code = ("import sys, time; from cxr_core import locks; from cxr_core.store import RunStore\n"
            "with locks.queue_lock(RunStore(sys.argv[1])):\n    print(time.monotonic())\n")
    with locks.queue_lock(store):
        child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)  # long enough for the child to reach the lock and wait on it
        released = time.monotonic()
    try:
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0 and float(out) >= released  # it got the lock only after this process let go


