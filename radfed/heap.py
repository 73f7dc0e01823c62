"""Free heap pages handed back to the OS during long inference passes (glibc's malloc_trim).

Under bfloat16 autocast on a CPU (radfed.precision) each inference batch allocates large
transient buffers, and glibc keeps the freed pages in its heap, more of them the more
batches run: evaluating a 20k-image clinic peaked at 1.22x the memory of a 1k-image one
(bench/clinic_memory.py) while holding no more data (float32: 1.03x). `trimmed` gives
the free pages back every few batches, which keeps the peak flat in the clinic's size
(1.05x) at no measurable cost; it is used by the passes that read a whole split without
training (evaluation, feature extraction, BatchNorm re-estimation). Training passes are
left alone: radfed.flower_env keeps their buffers on purpose (ALLOCATOR_ENV). Where the C
library has no malloc_trim (not glibc), nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterable, Iterator
from typing import TypeVar

EVERY = 8  # batches between two trims: a trim costs a few ms, a batch far more

T = TypeVar("T")


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Hand glibc's free heap pages back to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def trimmed(batches: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """The batches of `batches`, the free heap handed back before every `every`-th one."""
    for i, batch in enumerate(batches):
        if i % every == 0:
            trim_heap()
        yield batch
