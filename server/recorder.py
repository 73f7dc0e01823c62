"""Writes what a running strategy sees into the store, and checkpoints the global model.

One `RunRecorder` per run, living in the ServerApp process. Each write is its own
transaction, so a failure in round 3 never loses rounds 1 and 2.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord

from radfed.spec import ExperimentSpec
from radfed.store import Store
from strategies.utils import ClinicReply

log = logging.getLogger("radfed.server")

_ROUND_KEYS = {"train": {"train_loss": "train_loss"},
               "evaluate": {"val_loss": "val_loss", "val_accuracy": "val_accuracy",
                            "val_auroc": "val_auroc"}}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def sha256_file(path: Path) -> str:
    """Hex digest of a file, read in chunks (checkpoints are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class RunRecorder:
    """Store writer for one run; implements strategies.recording.RoundRecorder."""

    def __init__(self, store: Store, run_id: int, spec: ExperimentSpec, checkpoint_dir: Path):
        self.store, self.run_id, self.spec = store, run_id, spec
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.val_auroc: dict[int, float | None] = {}
        self._round_start = time.monotonic()

    def clinic_replies(self, server_round: int, phase: str, replies: list[ClinicReply]) -> None:
        for reply in replies:
            if reply.error:
                log.warning("round %d %s: %s failed: %s", server_round, phase, reply.clinic, reply.error)
                continue
            m = reply.metrics
            prefix = "train" if phase == "train" else "val"
            self.store.record_clinic_result(
                self.run_id, server_round, reply.clinic, reply.node_id, phase,
                loss=_finite(m.get(f"{prefix}_loss")), num_examples=reply.num_examples,
                accuracy=_finite(m.get("val_accuracy")), auroc=_finite(m.get("val_auroc")),
                device=reply.device,
            )

    def round_metrics(self, server_round: int, phase: str, metrics: MetricRecord | None,
                      replies: list[ClinicReply]) -> None:
        if metrics is None:
            return
        values = {col: _finite(float(metrics[key])) for key, col in _ROUND_KEYS[phase].items()
                  if key in metrics}
        ok = [r for r in replies if not r.error]
        if phase == "evaluate":
            self.val_auroc[server_round] = values.get("val_auroc")
            values.update(num_clinics=len(ok), num_examples=sum(r.num_examples for r in ok))
        self.store.record_round(self.run_id, server_round, **values)

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's evaluate_fn: runs after each round's evaluation; round 0 is skipped."""
        if server_round == 0:
            return None
        path = self.checkpoint_dir / f"round-{server_round:03d}.pt"
        torch.save({"state_dict": arrays.to_torch_state_dict(), "round": server_round,
                    "spec": self.spec.to_json()}, path)
        metric = self.val_auroc.get(server_round)
        self.store.record_checkpoint(self.run_id, server_round, str(path), sha256_file(path),
                                     "val_auroc", metric)
        log.info("round %d checkpoint %s (val_auroc=%s)", server_round, path, metric)
        return None
