"""Contracts of cxr_core.processes: a recorded process is alive only while it is the same process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cxr_core.processes import pid_alive, process_record, process_start


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="start times come from /proc (Linux)")
def test_a_record_names_this_process_and_another_start_time_does_not():
    record = process_record(os.getpid())
    assert record == {"pid": os.getpid(), "pid_start": process_start(os.getpid())} and record["pid_start"] > 0
    assert pid_alive(os.getpid(), record["pid_start"]) and not pid_alive(os.getpid(), record["pid_start"] + 1)
    assert not pid_alive(None) and not pid_alive("not a pid") and process_start(-1) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="process states come from /proc (Linux)")
def test_a_finished_process_not_yet_reaped_is_not_alive():
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        start = process_start(zombie.pid)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.02)
        assert not pid_alive(zombie.pid, start)
    finally:
        zombie.wait()
    assert process_start(zombie.pid) is None and not pid_alive(zombie.pid)
