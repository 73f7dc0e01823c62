"""No process outlives the one that started it, even one busy waiting on its own threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A parent that starts a child stuck as a ServerApp gets stuck when its SuperLink dies: the
# main thread waiting for a worker thread that retries for a minute. The child's pid goes
# to stdout; then the parent waits to be killed.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
child.wait()
"""
CHILD = """
import sys, threading, time
if sys.argv[1] == "watched":
    from radfed.processes import exit_soon_after_parent
    exit_soon_after_parent(grace_s=0.5)
worker = threading.Thread(target=time.sleep, args=(60,))  # not a daemon: Python waits for it
worker.start()
worker.join()
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _child_after_parent_killed(mode: str) -> bool:
    """Whether the child is still running 4 s after its parent was SIGKILLed."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # the child is up and waiting on its thread
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 4.0
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        return _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_serverapp_stuck_on_its_threads_ends_soon_after_its_parent():
    assert _child_after_parent_killed("plain")  # as Flower leaves it: still there
    assert not _child_after_parent_killed("watched")  # radfed's ServerApp: gone
