"""Is a recorded process still the one that recorded itself? A pid with its start time.

A pid alone can be reused by an unrelated process after ours ended; the start time
(psutil's create_time, seconds since the epoch) tells the two apart. The run store and the
job queue record both and compare both.
"""

from __future__ import annotations

import psutil


def process_start(pid) -> float | None:
    """When process `pid` started (psutil create_time, seconds since the epoch); None where unknown.

    A pid is reused once its process is gone; the pair (pid, start) names one process for good."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def process_record(pid: int) -> dict:
    """What a status file stores to find the process again: its pid and start time."""
    return {"pid": pid, "pid_start": process_start(pid)}


def pid_alive(pid, start=None) -> bool:
    """True while `pid` is a live process, and the same one that recorded `start` (process_start).

    With no start recorded (files written before it was), a live pid is all there is to go on.
    A start recorded as clock ticks (files written before psutil measured it) cannot be compared
    with seconds: the pid's liveness decides then too."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        # A zombie has finished: it waits only for its parent to read its exit status.
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.AccessDenied:
        return True  # alive, and another user's: nothing more can be read
    except (psutil.Error, OSError):
        return False
    if start is None or isinstance(start, int):
        return True
    return abs(started - float(start)) < 0.005  # create_time has the kernel's clock-tick resolution
