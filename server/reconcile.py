"""No run stays `running` in the store after Flower has stopped running it.

A ServerApp records a run's end itself, unless it dies first: the SuperLink was killed,
restarted without its state, or the process was killed. The SuperLink's supervisor and
`coordinator run` compare the store's `running` rows with Flower's own view and mark a
run `failed`, with the reason, when Flower reports it finished or no longer knows it.
A run must be seen so twice in a row: a ServerApp that has just finished may still be
writing its last row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radfed.store import Store

LOST = "the SuperLink no longer knows this run (restarted without its state?)"


def stale_reason(flower_status: str | None) -> str | None:
    """Why a run the store calls running is over, given Flower's status; None if it is not."""
    if flower_status is None:
        return LOST
    if flower_status.startswith("finished"):
        return (
            f"Flower reports {flower_status} but the ServerApp did not record the end "
            "(killed with the SuperLink?); `coordinator run --resume` continues it"
        )
    return None


@dataclass
class Reconciler:
    """Marks stale `running` rows failed; one instance per supervisor (it remembers suspects)."""

    store: Store
    suspects: dict[int, str] = field(default_factory=dict)  # store run id → reason seen once

    def check(self, flower_runs: dict[int, str]) -> list[str]:
        """Compare with Flower's runs (id → status); returns the runs marked failed."""
        marked, suspects = [], {}
        for run_id, flwr_run_id in self.store.running_runs():
            reason = stale_reason(flower_runs.get(int(flwr_run_id)))
            if reason is None:
                continue
            if self.suspects.get(run_id) == reason:
                self.store.finish_run(run_id, "failed", error=reason)
                marked.append(f"run {flwr_run_id}: {reason}")
            else:
                suspects[run_id] = reason
        self.suspects = suspects
        return marked
