"""Child processes that must never outlive the command that started them.

Flower's SuperLink and SuperNode each start `flower-superexec` in a session of its own,
so a process-group kill misses it; we collect every descendant from /proc before
signalling, and stop them too.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere).

    Used as `preexec_fn` for every long-lived child radfed starts (SuperLink, SuperNode,
    ClientApp worker), so that a SIGKILL of the command that started them (an OOM killer,
    a service manager's stop timeout) never leaves them running on their own.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def exit_soon_after_parent(grace_s: float = 5.0, every_s: float = 0.2) -> None:
    """End this process `grace_s` seconds after its parent dies, whatever it is doing.

    For a process radfed does not start itself: Flower's SuperExec starts the ServerApp
    and, when the SuperLink dies, asks it to stop with SIGINT; a ServerApp caught in the
    middle of moving a model then waits for its transfer threads, which retry the lost
    SuperLink with back-offs of up to 15 s each, and outlives the SuperLink for minutes.
    The grace lets Flower's own stop (and radfed's record of the failure) happen first.
    """
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        time.sleep(grace_s)
        os._exit(70)

    threading.Thread(target=watch, name="radfed-parent-watch", daemon=True).start()


@functools.lru_cache(maxsize=1)
def _prctl():
    """libc's prctl, looked up once in the parent (a forked child must not import or load)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def spawn_bound(cmd: list[str], **kwargs) -> subprocess.Popen:
    """`subprocess.Popen` for a child that must not outlive this process (die_with_parent)."""
    _prctl()
    return subprocess.Popen(cmd, preexec_fn=die_with_parent, **kwargs)  # noqa: PLW1509


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_tree(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a process and all its descendants; SIGKILL what is left after `timeout`."""
    stop_all([proc], timeout)


def stop_all(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Stop several process trees at once: one grace period for all, not one each."""
    pids = [pid for proc in procs for pid in descendants(proc.pid) + [proc.pid]]
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.poll()
        if not any(_alive(pid) for pid in pids):
            break
        time.sleep(0.1)
    _signal([pid for pid in pids if _alive(pid)], signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on `host` (for SuperLink and SuperNode local APIs)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def reachable(address: str, timeout: float = 3.0) -> str | None:
    """None if a TCP connection to HOST:PORT opens, else the reason it did not."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"'{address}' is not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__


def run_foreground(
    cmd: list[str],
    env: dict[str, str],
    on_line: Callable[[str], None] | None = None,
    tick: Callable[[], None] | None = None,
    every: float = 5.0,
) -> int:
    """Run `cmd` until it exits; Ctrl-C or SIGTERM stop it and all its descendants.

    With `on_line`, the child's output is passed through line by line and shown to
    `on_line` too (to explain known failures in one line); `tick` runs every `every`
    seconds while the child lives (a supervisor's periodic work); when it returns True
    the child is stopped and its exit status returned (the caller restarts it).
    """
    import signal
    import sys
    import threading

    pipe = subprocess.PIPE if on_line else None
    proc = spawn_bound(
        cmd,
        env=env,
        stdout=pipe,
        stderr=subprocess.STDOUT if on_line else None,
        text=bool(on_line),
        errors="replace" if on_line else None,
    )

    def _forward(signum: int, _frame: object) -> None:
        stop_tree(proc)
        sys.exit(128 + signum)

    def _pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            sys.stdout.flush()
            on_line(line)  # type: ignore[misc]

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    reader = threading.Thread(target=_pump, daemon=True) if on_line else None
    if reader:
        reader.start()
    try:
        while True:
            try:
                code = proc.wait(timeout=every if tick else None)
                break
            except subprocess.TimeoutExpired:
                if tick() is True:  # type: ignore[misc]  # the supervisor wants a fresh child
                    stop_tree(proc)
                    code = proc.wait()
                    break
        if reader:
            reader.join(timeout=5)
        return code
    finally:
        if proc.poll() is None:
            stop_tree(proc)
