"""Environment for every Flower process radfed starts: Flower stays inside radfed's control.

Flower keeps its home (connections, installed app bundles) under FLWR_HOME, reports
telemetry and checks for updates unless told not to, and by default lets the SuperLink
install an app's dependencies at run time. radfed turns all of that off, always.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# glibc hands big activation buffers back to the OS after every pass; these keep them
# (ResNet50 steps up to 1.7x faster on CPU, see shared/notes/radimagenet.md).
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "1073741824",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
}


def radfed_home() -> Path:
    """Where radfed keeps its state (`RADFED_HOME`, default ~/.radfed)."""
    home = Path(os.environ.get("RADFED_HOME", "~/.radfed")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def timestamped_flower_logs() -> None:
    """Flower's log lines in this process get a timestamp (as radfed's own have), and no
    colour codes unless they go to a terminal: the SuperLink's, a SuperNode's and a
    worker's lines land in log files an IT admin reads, where "when" matters and escape
    codes are noise. Flower itself adds timestamps only at FLWR_LOG_LEVEL=DEBUG."""
    from flwr.supercore.logger import update_console_handler

    update_console_handler(timestamps=True, colored=sys.stderr.isatty())


def flower_env(flwr_home: Path | None = None, **extra: str) -> dict[str, str]:
    """A copy of os.environ fit for flower-superlink/supernode/flwr child processes."""
    env = dict(os.environ)
    home = Path(flwr_home) if flwr_home else radfed_home() / "flwr"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        FLWR_HOME=str(home.resolve()),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        # superexec starts flwr-serverapp/flwr-clientapp from PATH: use this venv's.
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        PYTHONUNBUFFERED="1",
        **ALLOCATOR_ENV,
    )
    env.update(extra)
    return env


def flower_bin(name: str) -> str:
    """Absolute path of a Flower console script in this interpreter's environment."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name
