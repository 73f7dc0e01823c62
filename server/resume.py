"""Continuing an interrupted run from its last complete checkpoint.

A run whose ServerApp died (the SuperLink was killed or restarted, the machine rebooted)
keeps its rounds up to the last checkpoint: `round-NNN.pt` is written, with its sha256 in
the store, at the end of every round. `coordinator run --resume RUN` submits the same
experiment again with the newest checkpoint whose file is intact; the ServerApp starts
from it, runs the remaining rounds and records them under the same run (rounds r+1..N;
`runs.resumed_from` keeps the earlier Flower run ids), so the leaderboard shows one entry.

What does not carry over: a server optimiser's state (FedAdam/FedYogi/FedAdagrad moments
restart) and the clinics' shuffling seeds (the strategy's rounds are numbered from 1
again), so a resumed run is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from radfed.store import Store


class ResumeError(RuntimeError):
    """A run that cannot be resumed; one line naming it and why."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues: its store id, spec, holdout and last intact checkpoint."""

    run_id: int
    flwr_run_id: str
    spec_json: str
    holdout: str
    round: int
    rounds_planned: int
    checkpoint: Path
    sha256: str

    def run_config(self) -> dict[str, str | int]:
        """The extra run-config keys the ServerApp reads to continue the run."""
        return {
            "resume-run": self.run_id,
            "resume-round": self.round,
            "resume-checkpoint": str(self.checkpoint),
            "resume-sha256": self.sha256,
        }


def resume_point(store: Store, flwr_run_id: str) -> ResumePoint:
    """The newest intact checkpoint of a failed or interrupted run."""
    from server.recorder import sha256_file

    run = store.run_row(flwr_run_id)
    if run is None:
        raise ResumeError(f"no run {flwr_run_id} in {store.url}; `coordinator leaderboard` lists them")
    if run.status == "completed":
        raise ResumeError(f"run {flwr_run_id} completed; nothing to resume")
    if run.status == "running":
        raise ResumeError(
            f"run {flwr_run_id} is still running; follow it with `coordinator run --attach "
            f"{run.flwr_run_id}`, or wait until the SuperLink marks it failed"
        )
    spec_json = store.experiment_spec(run.experiment_id)
    for ckpt in store.checkpoints_of(int(run.id)):  # type: ignore[arg-type]
        path = Path(ckpt["path"])
        if path.is_file() and sha256_file(path) == ckpt["sha256"]:
            if ckpt["round"] >= run.rounds_planned:
                raise ResumeError(
                    f"run {flwr_run_id} has all {run.rounds_planned} rounds checkpointed; nothing to resume"
                )
            return ResumePoint(
                int(run.id),
                run.flwr_run_id,
                spec_json,
                run.holdout or "",  # type: ignore[arg-type]
                ckpt["round"],
                run.rounds_planned,
                path,
                ckpt["sha256"],
            )
    raise ResumeError(
        f"run {flwr_run_id} has no intact checkpoint (none written, or the files are "
        "missing or changed); start it again with `coordinator run`"
    )


def load_checkpoint(path: str | Path, sha256: str) -> dict[str, torch.Tensor]:
    """A round checkpoint's whole-model state_dict, after checking its digest."""
    from server.recorder import sha256_file

    path = Path(path)
    if sha256_file(path) != sha256:
        raise ResumeError(f"{path} changed since it was recorded (sha256 mismatch); not resuming from it")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
