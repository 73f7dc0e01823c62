"""Peak memory of this process and every process below it, sampled in a thread.

`coordinator simulate` runs Flower's simulation engine, which starts Ray: a GCS server, a
raylet and one worker process per ClientApp actor, all descendants of the coordinator's
process. Their memory is what decides how many virtual clinics a machine can hold, and
it is not visible from inside Python, so a thread samples the resident set size (RSS)
of the process tree with psutil. Sums of RSS count pages shared between processes (torch's
libraries, Ray's shared-memory object store) once per process: an upper bound of what
the tree really holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


@dataclass
class TreeMemory:
    """Peaks seen so far (MB): this process, its descendants summed, both together."""

    driver_mb: float = 0.0
    children_mb: float = 0.0
    total_mb: float = 0.0
    processes: int = 0  # most descendants alive at one sample
    samples: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "driver_mb": round(self.driver_mb),
            "children_mb": round(self.children_mb),
            "total_mb": round(self.total_mb),
            "processes": self.processes,
            "samples": self.samples,
        }


class TreeSampler:
    """`with TreeSampler(every=0.5) as peak:` samples until the block ends; `peak` holds the peaks."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.peak = TreeMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)
        self._me = psutil.Process()

    def sample(self) -> None:
        """One look at the tree; processes that end mid-look are skipped."""
        driver = self._me.memory_info().rss
        children, count = 0, 0
        for proc in self._me.children(recursive=True):
            try:
                children += proc.memory_info().rss
                count += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        with self.peak._lock:
            p = self.peak
            p.driver_mb = max(p.driver_mb, driver / MB)
            p.children_mb = max(p.children_mb, children / MB)
            p.total_mb = max(p.total_mb, (driver + children) / MB)
            p.processes = max(p.processes, count)
            p.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self.peak

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
