"""radfed.heap: inference passes hand glibc's free heap pages back every few batches."""

from __future__ import annotations

import pytest

from radfed import heap


def test_trimmed_passes_every_batch_through_and_trims_every_nth(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim_heap", lambda: calls.append(len(seen)) or True)
    seen: list[int] = []
    for batch in heap.trimmed(range(20), every=8):
        seen.append(batch)
    assert seen == list(range(20))
    assert calls == [0, 8, 16]  # before batches 0, 8 and 16


PROBE = """
import ctypes, sys
from radfed import heap

def rss_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))

if not heap.trim_heap():
    print("skip"); sys.exit(0)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: these blocks stay on the heap
blocks = [libc.malloc(1 << 20) for _ in range(200)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)  # touched: resident
for b in blocks[:-1]:  # the last one pins the heap's top: only malloc_trim gives the rest back
    libc.free(b)
before = rss_kb()
heap.trim_heap()
print(before - rss_kb())
"""


def test_trim_heap_gives_freed_pages_back_to_the_os():
    """In a child process (the probe fixes glibc's mmap threshold, which would stay so)."""
    import subprocess
    import sys

    from tests.federation import ROOT

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "skip":
        pytest.skip("no glibc malloc_trim here")
    assert int(out.stdout) > 100 * 1024  # over 100 of the 199 freed MB went back
