"""This process plus spawned helpers, sharing one load's header reads and pixel decoding."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger("radfed.data")

# progress(stage, done, total); stage is "headers" or "pixels".
Progress = Callable[[str, int, int], None]


class _Never:
    """A stand-in future that never completes (helpers not started or given up on)."""

    def done(self) -> bool:
        return False


_NEVER = _Never()


class Workers:
    """This process plus ``workers - 1`` spawned helpers, shared by one load's stages.

    Spawned, because fork with torch or gRPC threads alive can deadlock.  The
    helpers start on first use; this process works too from the first second,
    so their start-up (a second or more: they import pydicom and the plugins,
    never torch) is not dead time and small jobs never wait for it.  Chunks are
    handed out dynamically, so a slow JPEG 2000 study does not leave a process
    idle.  If the helpers cannot start (e.g. a script without an
    ``if __name__ == "__main__":`` guard), their chunks run here instead.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        self.ready: Any = _NEVER
        self._helpers_ok = False

    def start(self) -> None:
        """Spawn the helpers now (no-op with one worker or when already started)."""
        if self.workers > 1 and self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers - 1, mp_context=context)
            self.ready = self._pool.submit(os.getpid)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _check_helpers(self) -> None:
        if not self._helpers_ok and self.ready.done():
            self._helpers_ok = self.ready.exception() is None
            if not self._helpers_ok:
                log.warning("worker processes failed to start; working in this process instead")
            self.ready = _NEVER

    def map(
        self,
        func: Callable[..., list[Any]],
        items: list[str],
        args: tuple[Any, ...],
        stage: str,
        progress: Progress | None,
        chunk_max: int = 4,
        sink: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """[func([item], *args)[0] for item in items], in chunks over this process and the helpers.

        With ``sink``, each result goes to ``sink(index, result)`` as it arrives (in any
        order) and is not kept: the list returned holds None, so a caller that writes
        results away never holds more than the chunks in flight."""
        results: list[Any] = [None] * len(items)
        done = 0

        def finish(indices: list[int], outcome: list[Any]) -> None:
            nonlocal done
            for i, result in zip(indices, outcome):
                if sink is not None:
                    sink(i, result)
                else:
                    results[i] = result
            done += len(indices)
            if progress is not None:
                progress(stage, done, len(items))

        def run_here(indices: list[int]) -> None:
            finish(indices, func([items[i] for i in indices], *args))

        if self.workers <= 1 or len(items) <= 1:
            for i in range(len(items)):
                run_here([i])
            return results
        self.start()
        chunk = max(1, min(chunk_max, len(items) // (self.workers * 8)))
        queue = [list(range(i, min(i + chunk, len(items)))) for i in range(0, len(items), chunk)][::-1]
        pending: dict[Any, list[int]] = {}
        while queue or pending:
            self._check_helpers()
            # Chunks go to the helpers only once they answer: work queued for a helper
            # that is still importing would leave this process waiting at the end.
            while self._helpers_ok and queue and len(pending) < 2 * (self.workers - 1):
                indices = queue.pop()
                try:
                    pending[self._pool.submit(func, [items[i] for i in indices], *args)] = indices  # type: ignore[union-attr]
                except (BrokenProcessPool, RuntimeError):  # a helper died: finish here
                    self._helpers_ok = False
                    queue.append(indices)
            if queue:
                run_here(queue.pop())
            for future in [f for f in pending if f.done()] if queue else list(pending):
                indices = pending.pop(future)
                try:
                    finish(indices, future.result())
                except BrokenProcessPool:
                    self._helpers_ok = False
                    run_here(indices)
        return results
