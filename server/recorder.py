"""Writes what a running strategy sees into the store, and checkpoints the global model.

One `RunRecorder` per run, living in the ServerApp process. Each write is its own
transaction, so a failure in round 3 never loses rounds 1 and 2.

Evaluation results arrive two ways (see strategies.recording): inside round r + 1's
train replies for the model of round r, and from the evaluate replies after the final
round. Both land in the same rows: an "evaluate" row per clinic and the round's
example-weighted validation metrics.  A clinic's first train reply of a run also
carries its data card (counts only), kept in clinic_data_cards for the dashboard.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord

from radfed.audit import Registry
from radfed.data import SHARED_CARD_KEYS
from radfed.spec import ExperimentSpec
from radfed.store import Store
from strategies.utils import ClinicReply

log = logging.getLogger("radfed.server")
VAL_KEYS = ("val_loss", "val_accuracy", "val_auroc")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def sha256_file(path: Path) -> str:
    """Hex digest of a file, read in chunks (checkpoints are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weighted_validation(replies: list[ClinicReply], count_key: str) -> dict[str, float | None]:
    """Validation metrics averaged over clinics, weighted by validation examples."""
    out: dict[str, float | None] = {}
    for key in VAL_KEYS:
        pairs = [(r.metrics[key], r.metrics.get(count_key, 0)) for r in replies
                 if _finite(r.metrics.get(key)) is not None and r.metrics.get(count_key, 0) > 0]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total else None
    return out


class RunRecorder:
    """Store writer for one run; implements strategies.recording.RoundRecorder."""

    def __init__(self, store: Store, run_id: int, spec: ExperimentSpec, checkpoint_dir: Path,
                 audit: Registry | None = None, flwr_run_id: str = ""):
        self.store, self.run_id, self.spec = store, run_id, spec
        self.audit, self.flwr_run_id = audit, flwr_run_id
        self._excluded: set[str] = set()
        self._pending: list[tuple[str, int, str | None, str]] = []
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.val_auroc: dict[int, float | None] = {}
        self._round_started = time.monotonic()

    def clinic_replies(self, server_round: int, phase: str, replies: list[ClinicReply]) -> None:
        for reply in replies:
            if reply.error:
                log.warning("round %d %s: %s failed: %s", server_round, phase, reply.clinic, reply.error)
                continue
            if phase == "train":
                if reply.data_card is not None:
                    self._data_card(reply)
                self._clinic_row(server_round, "train", reply, reply.num_examples)
                self._audit("contributed", server_round, reply.clinic, reply.node_id, pending=True)
                if "val_examples" in reply.metrics:
                    self._clinic_row(server_round - 1, "evaluate", reply,
                                     int(reply.metrics["val_examples"]))
            else:
                self._clinic_row(server_round, "evaluate", reply, reply.num_examples)

    def _data_card(self, reply: ClinicReply) -> None:
        """Keep a clinic's data mix for the dashboard: only the known card keys, as sent."""
        card = {key: reply.data_card[key] for key in SHARED_CARD_KEYS if key in reply.data_card}  # type: ignore[index]
        if not card:
            log.warning("ignoring a data card without known keys from %s", reply.clinic)
            return
        self.store.record_data_card(self.run_id, reply.clinic, reply.node_id, card)

    def excluded(self, server_round: int, reply: ClinicReply, reason: str) -> None:
        """An update the guards refused: recorded with the reason, never aggregated."""
        log.warning("round %d: excluded %s: %s", server_round, reply.clinic, reason)
        self._excluded.add(str(reply.node_id))
        self._audit("excluded", server_round, reply.clinic, reply.node_id, detail=reason)
        self.store.record_clinic_result(self.run_id, server_round, reply.clinic, reply.node_id,
                                        "excluded", loss=None, num_examples=reply.num_examples,
                                        device=reply.device, note=reason)

    def late(self, server_round: int, node_id: str) -> None:
        """A clinic that did not reply before the round timeout (its result, if any, is dropped)."""
        log.warning("round %d: node %s did not reply before the round timeout", server_round, node_id)
        self._audit("late", server_round, None, node_id, detail="no reply before the round timeout")
        self.store.record_clinic_result(self.run_id, server_round, f"node-{node_id}", node_id,
                                        "late", loss=None, num_examples=0,
                                        note="no reply before the round timeout; not aggregated")

    def _audit(self, kind: str, server_round: int, clinic: str | None, node_id: str,
               detail: str | None = None, pending: bool = False) -> None:
        """Audit trail rows; contributions wait until the guards have screened the round."""
        if self.audit is None:
            return
        if pending:
            self._pending.append((kind, server_round, clinic, node_id))
            return
        self.audit.event(kind, clinic=clinic, node_id=node_id, flwr_run_id=self.flwr_run_id,
                         server_round=server_round, detail=detail)

    def _flush_contributions(self) -> None:
        for kind, server_round, clinic, node_id in self._pending:
            if str(node_id) not in self._excluded:
                self._audit(kind, server_round, clinic, node_id)
        self._pending, self._excluded = [], set()

    def _clinic_row(self, server_round: int, phase: str, reply: ClinicReply, examples: int) -> None:
        m = reply.metrics
        evaluate = phase == "evaluate"
        self.store.record_clinic_result(
            self.run_id, server_round, reply.clinic, reply.node_id, phase,
            loss=_finite(m.get("val_loss" if evaluate else "train_loss")), num_examples=examples,
            accuracy=_finite(m.get("val_accuracy")) if evaluate else None,
            auroc=_finite(m.get("val_auroc")) if evaluate else None, device=reply.device,
        )

    def round_metrics(self, server_round: int, phase: str, metrics: MetricRecord | None,
                      replies: list[ClinicReply]) -> None:
        ok = [r for r in replies if not r.error]
        if phase == "train":
            self._flush_contributions()
            if metrics is not None and "train_loss" in metrics:
                self.store.record_round(self.run_id, server_round,
                                        train_loss=_finite(float(metrics["train_loss"])))
            received = [r for r in ok if "val_examples" in r.metrics]
            if received:
                self._validation(server_round - 1, received, "val_examples")
        elif ok:
            self._validation(server_round, ok, "num-examples")

    def _validation(self, server_round: int, replies: list[ClinicReply], count_key: str) -> None:
        values = weighted_validation(replies, count_key)
        self.val_auroc[server_round] = values["val_auroc"]
        self.store.record_round(
            self.run_id, server_round, **values, num_clinics=len(replies),
            num_examples=int(sum(r.metrics.get(count_key, 0) for r in replies)))
        self.store.set_checkpoint_metric(self.run_id, server_round, values["val_auroc"])

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's evaluate_fn: runs at the end of every round; round 0 is skipped."""
        if server_round == 0:
            return None
        path = self.checkpoint_dir / f"round-{server_round:03d}.pt"
        torch.save({"state_dict": arrays.to_torch_state_dict(), "round": server_round,
                    "spec": self.spec.to_json()}, path)
        metric = self.val_auroc.get(server_round)
        self.store.record_checkpoint(self.run_id, server_round, str(path), sha256_file(path),
                                     "val_auroc", metric)
        duration = time.monotonic() - self._round_started
        self.store.record_round(self.run_id, server_round, duration_s=duration)
        self._round_started = time.monotonic()
        log.info("round %d checkpoint %s (val_auroc=%s, %.1f s)", server_round, path, metric, duration)
        return None
