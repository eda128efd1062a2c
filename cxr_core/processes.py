"""Is a recorded process still the one that recorded itself? A pid with its start time.

A pid alone can be reused by an unrelated process after ours ended; the start time
(Linux /proc/<pid>/stat, field 22, in clock ticks since boot) tells the two apart.
The run store and the job queue record both and compare both.
"""

from __future__ import annotations

import os
from pathlib import Path


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards); None without /proc."""
    try:
        # The command name (field 2) is in parentheses and may hold spaces: split after its ")".
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid) -> int | None:
    """When process `pid` started (/proc/<pid>/stat field 22, clock ticks after boot); None where unknown.

    A pid is reused once its process is gone; the pair (pid, start) names one process for good."""
    fields = _proc_stat(pid) if isinstance(pid, int) and pid > 0 else None
    return int(fields[19]) if fields else None


def process_record(pid: int) -> dict:
    """What a status file stores to find the process again: its pid and start time."""
    return {"pid": pid, "pid_start": process_start(pid)}


def pid_alive(pid, start=None) -> bool:
    """True while `pid` is a live process, and the same one that recorded `start` (process_start).

    Without /proc (macOS), or with no start recorded (files written before it was), a live pid is
    all there is to go on."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, and another user's: recycled, unless the start time says otherwise below
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":  # a zombie has finished: it waits only for its parent to read its exit status
        return False
    return start is None or int(fields[19]) == start
