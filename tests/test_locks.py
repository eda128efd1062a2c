"""Contracts of cxr_core.locks: one worker per run store, and the holder is known to this process."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_queue_lock_can_be_taken_again_once_released(tmp_path):
    store = RunStore(tmp_path)
    with locks.queue_lock(store):
        assert (tmp_path / locks.QUEUE_LOCK_NAME).exists()
    with locks.queue_lock(store):
        pass
