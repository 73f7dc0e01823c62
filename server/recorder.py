"""Writes what a running strategy sees into the store, and checkpoints the global model.

One `RunRecorder` per run, living in the ServerApp process. Each write is its own
transaction, so a failure in round 3 never loses rounds 1 and 2.

Evaluation results arrive two ways (see strategies.recording): inside round r + 1's
train replies for the model of round r, and from the evaluate replies after the final
round. Both land in the same rows: an "evaluate" row per clinic and the round's
example-weighted validation metrics. Each clinic's quality figures (AUROC CI over its
patients, sensitivity, specificity, threshold, ECE) go with its row; the round's pooled
figures are computed from the clinics' per-bin counts (radfed.evaluation.pooled_quality).
A task with more than two labels also gets each class's one-vs-rest figures per clinic row
and pooled per round, with their macro mean (radfed.per_class).
A clinic's first train reply of a run also carries its data card (counts only), kept in
clinic_data_cards for the dashboard. Each evaluation row also keeps the clinic's score histogram and
calibration bins (`stored_scores`), from which the dashboard draws ROC curves, reliability
diagrams and the confusion matrix at the stated threshold.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord

from radfed.audit import Registry
from radfed.data_card import SHARED_CARD_KEYS
from radfed.delivery import sha256_file  # noqa: F401 - re-exported (server.resume, tests)
from radfed.per_class import pooled_per_class
from radfed.pooled import SUMMARY_KEYS, operating_point, pooled_quality
from radfed.reply import ClinicValidation
from radfed.spec import ExperimentSpec
from radfed.store import Store
from strategies.utils import ClinicReply

log = logging.getLogger("radfed.server")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def pooled_validation(replies: list[ClinicReply]) -> dict[str, float | None]:
    """Pooled figures over the clinics that sent their per-score counts."""
    return pooled_quality([v.summary for r in replies if (v := r.validation()) is not None])


def pooled_classes(replies: list[ClinicReply], labels: tuple[str, ...] | list[str]) -> dict | None:
    """Pooled per-class figures and their macro mean (None for a binary task)."""
    return pooled_per_class(
        [v.per_class for r in replies if (v := r.validation()) is not None and v.per_class is not None], labels
    )


def stored_scores(figures: ClinicValidation | None) -> dict[str, list[float]] | None:
    """The clinic's score histogram and calibration bins as the store keeps them with its
    evaluation row (for the dashboard's ROC, reliability and confusion views); the
    bootstrap replicates stay out: they only make the pooled CI, which is stored."""
    summary = figures.summary if figures is not None else {}
    kept = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    return kept if len(kept) == len(SUMMARY_KEYS) else None


def weighted_validation(replies: list[ClinicReply]) -> dict[str, float | None]:
    """Loss, accuracy and AUROC averaged over clinics, weighted by validation images
    (the "clinic mean"; the headline is the pooled AUROC)."""
    out: dict[str, float | None] = {}
    figures = [v for r in replies if (v := r.validation()) is not None and v.examples > 0]
    for key, read in (
        ("val_loss", lambda v: v.loss),
        ("val_accuracy", lambda v: v.accuracy),
        ("val_auroc", lambda v: v.auroc),
    ):
        pairs = [(read(v), v.examples) for v in figures if _finite(read(v)) is not None]
        total = sum(w for _, w in pairs)
        out[key] = sum(x * w for x, w in pairs) / total if total else None
    return out


class RunRecorder:
    """Store writer for one run; implements strategies.recording.RoundRecorder."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        spec: ExperimentSpec,
        checkpoint_dir: Path,
        audit: Registry | None = None,
        flwr_run_id: str = "",
        frozen: dict[str, torch.Tensor] | None = None,
        key_order: list[str] | None = None,
        normalisation: str = "radimagenet",
        round_offset: int = 0,
    ):
        """`frozen` (head-only rounds): the backbone tensors merged into every checkpoint,
        which then holds the full model in `key_order`."""
        self.store, self.run_id, self.spec = store, run_id, spec
        self.audit, self.flwr_run_id = audit, flwr_run_id
        self._excluded: set[str] = set()
        self._pending: list[tuple[str, int, str | None, str]] = []
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.val_auroc: dict[int, float | None] = {}  # pooled AUROC per round (the headline)
        self.best: tuple[int, float] | None = None  # (round, pooled AUROC) of the selected checkpoint
        self.stopped_at: int | None = None  # early stopping made this round the last
        self._evaluated = 0  # the newest round whose model has pooled figures
        self.pooled: dict[int, dict[str, float | None]] = {}
        self._round_started = time.monotonic()  # reset when round 1 starts (checkpoint(0))
        self.frozen, self.key_order = frozen or {}, key_order
        self.normalisation = normalisation
        self.offset = round_offset  # a resumed run: the strategy's round 1 is round offset + 1
        if round_offset:  # a resumed run keeps the selection of its earlier rounds
            kept = [
                (c["round"], c["metric_value"])
                for c in store.checkpoints_of(run_id)
                if c["round"] == store.selected_round(run_id) and c["metric_value"] is not None
            ]
            self.best = kept[0] if kept else None
        self._down: dict[tuple[int, str], dict[str, int]] = {}
        self._traffic: dict[int, list[int]] = {}  # round -> [bytes down, bytes up]
        self._names: dict[str, str] = {}  # node id -> name it replied with (no register: --insecure)
        self._taking_part: dict[str, tuple[str, int]] = {}  # node id -> (name, last round replied)

    def sent(self, server_round: int, phase: str, bytes_by_node: dict[str, int]) -> None:
        """Model bytes going to each clinic; totals land on the round's row."""
        server_round += self.offset
        self._down[(server_round, phase)] = dict(bytes_by_node)
        self._add_traffic(server_round, down=sum(bytes_by_node.values()))

    def _add_traffic(self, server_round: int, down: int = 0, up: int = 0) -> None:
        """Counted as messages go and come; written with the round's duration at its end."""
        totals = self._traffic.setdefault(server_round, [0, 0])
        totals[0] += down
        totals[1] += up

    def _name(self, node_id: str) -> str:
        """A clinic's name by its node id: the register's, else what it called itself before."""
        registered = self.audit.clinic_by_node() if self.audit is not None else {}
        return registered.get(str(node_id)) or self._names.get(str(node_id)) or f"node-{node_id}"

    def _revoked(self, node_id: str) -> bool:
        return self.audit is not None and any(
            c.node_id == str(node_id) and c.status == "revoked" for c in self.audit.clinics()
        )

    def clinic_replies(self, server_round: int, phase: str, replies: list[ClinicReply]) -> None:
        server_round += self.offset
        self._add_traffic(server_round, up=sum(r.bytes_up for r in replies))
        for reply in replies:
            if reply.error:
                self._failed(server_round, phase, reply)
                continue
            self._names[str(reply.node_id)] = reply.clinic
            self._taking_part[str(reply.node_id)] = (reply.clinic, server_round)
            if phase == "train":
                if reply.data_card is not None:
                    self._data_card(reply)
                self._clinic_row(server_round, "train", reply, reply.num_examples, traffic=True)
                self._audit("contributed", server_round, reply.clinic, reply.node_id, pending=True)
                if "val_examples" in reply.metrics:
                    self._clinic_row(server_round - 1, "evaluate", reply, int(reply.metrics["val_examples"]))
            else:
                self._clinic_row(server_round, "evaluate", reply, reply.num_examples, traffic=True)

    def roll_call(self, server_round: int, online: list[str]) -> None:
        """A clinic that replied earlier in the run but is not connected as this round starts
        is recorded once, by name: lost (no heartbeat), or revoked. Flower would simply not
        send it anything, and the round would go on without a word about who is missing."""
        server_round += self.offset
        here = {self._name(n) for n in online}
        for node_id, (name, last) in list(self._taking_part.items()):
            if name in here:
                continue
            del self._taking_part[node_id]
            if self._revoked(node_id):
                kind, note = "revoked", f"revoked; not sent round {server_round}"
            else:
                kind, note = (
                    "lost",
                    (f"not connected when round {server_round} started (last reply in round {last}): no heartbeat"),
                )
            log.warning("round %d: %s %s", server_round, name, note)
            self._audit(kind, server_round, name, node_id, detail=note)
            self.store.record_clinic_result(
                self.run_id, server_round, name, node_id, kind, loss=None, num_examples=0, note=note
            )

    def _data_card(self, reply: ClinicReply) -> None:
        """Keep a clinic's data mix for the dashboard: only the known card keys, as sent."""
        card = {key: reply.data_card[key] for key in SHARED_CARD_KEYS if key in reply.data_card}  # type: ignore[index]
        if not card:
            log.warning("ignoring a data card without known keys from %s", reply.clinic)
            return
        self.store.record_data_card(self.run_id, reply.clinic, reply.node_id, card)

    def excluded(self, server_round: int, reply: ClinicReply, reason: str) -> None:
        """An update the guards refused: recorded with the reason, never aggregated."""
        server_round += self.offset
        log.warning("round %d: excluded %s: %s", server_round, reply.clinic, reason)
        self._excluded.add(str(reply.node_id))
        self._audit("excluded", server_round, reply.clinic, reply.node_id, detail=reason)
        self.store.record_clinic_result(
            self.run_id,
            server_round,
            reply.clinic,
            reply.node_id,
            "excluded",
            loss=None,
            num_examples=reply.num_examples,
            device=reply.device,
            note=reason,
        )

    def late(self, server_round: int, node_id: str) -> None:
        """A clinic without a reply: revoked during the round, or late (the round timed out)."""
        server_round += self.offset
        name = self._name(node_id)
        self._taking_part.pop(str(node_id), None)
        if self._revoked(node_id):
            kind, note = "revoked", "revoked during the round; its reply, if any, was not used"
        else:
            kind, note = "late", "no reply before the round timeout; not aggregated"
        log.warning("round %d: %s %s", server_round, name, note)
        self._audit(kind, server_round, name, node_id, detail=note)
        self.store.record_clinic_result(
            self.run_id, server_round, name, node_id, kind, loss=None, num_examples=0, note=note
        )

    def _failed(self, server_round: int, phase: str, reply: ClinicReply) -> None:
        """A clinic the SuperLink lost (no heartbeat) or whose ClientApp failed, by name."""
        name = self._name(reply.node_id)
        self._taking_part.pop(str(reply.node_id), None)
        at = time.strftime("%H:%M:%S UTC", time.gmtime())
        if self._revoked(reply.node_id):
            kind, note = "revoked", f"revoked during the round (cut off at {at})"
        elif "Node Unavailable" in (reply.error or ""):
            kind, note = "lost", f"lost at {at}: the node stopped sending heartbeats ({phase})"
        else:
            kind, note = "failed", f"{phase} failed at {at}: {' '.join(str(reply.error).split())[:200]}"
        log.warning("round %d: %s %s", server_round, name, note)
        self._audit(kind, server_round, name, reply.node_id, detail=note)
        self.store.record_clinic_result(
            self.run_id, server_round, name, reply.node_id, kind, loss=None, num_examples=0, note=note
        )

    def _audit(
        self,
        kind: str,
        server_round: int,
        clinic: str | None,
        node_id: str,
        detail: str | None = None,
        pending: bool = False,
    ) -> None:
        """Audit trail rows; contributions wait until the guards have screened the round."""
        if self.audit is None:
            return
        if pending:
            self._pending.append((kind, server_round, clinic, node_id))
            return
        self.audit.event(
            kind, clinic=clinic, node_id=node_id, flwr_run_id=self.flwr_run_id, server_round=server_round, detail=detail
        )

    def _flush_contributions(self) -> None:
        for kind, server_round, clinic, node_id in self._pending:
            if str(node_id) not in self._excluded:
                self._audit(kind, server_round, clinic, node_id)
        self._pending, self._excluded = [], set()

    def _clinic_row(
        self, server_round: int, phase: str, reply: ClinicReply, examples: int, traffic: bool = False
    ) -> None:
        """One clinic's row; `traffic`: the row of the message exchange itself (bytes)."""
        figures = reply.validation() if phase == "evaluate" else None
        down = self._down.get((server_round, phase), {}).get(reply.node_id) if traffic else None
        self.store.record_clinic_result(
            self.run_id,
            server_round,
            reply.clinic,
            reply.node_id,
            phase,
            loss=_finite(figures.loss if figures else reply.metrics.get("train_loss")),
            num_examples=examples,
            accuracy=_finite(figures.accuracy) if figures else None,
            auroc=_finite(figures.auroc) if figures else None,
            device=reply.device,
            quality=figures.stored_quality() if figures else None,
            bytes_down=down,
            bytes_up=reply.bytes_up if traffic else None,
            per_class=figures.stored_per_class(self.spec.labels) if figures else None,
            scores=stored_scores(figures),
        )

    def holdout(self, server_round: int, reply: ClinicReply) -> None:
        """The final model evaluated at the clinic kept out of training; its sensitivity and
        specificity at the federation's pooled threshold (from its score histogram)."""
        server_round += self.offset
        if reply.error:
            log.warning("holdout evaluation at %s failed: %s", reply.clinic, reply.error)
            self.store.record_clinic_result(
                self.run_id,
                server_round,
                reply.clinic,
                reply.node_id,
                "holdout",
                loss=None,
                num_examples=0,
                note=reply.error,
            )
            return
        figures = reply.validation()
        quality = figures.stored_quality() if figures else {}
        pooled = self.pooled.get(server_round, {})
        cut = pooled.get("threshold_logit")
        if cut is not None and figures and figures.summary.get("hist_keys"):
            # the federation's operating point, not the clinic's own
            sens, spec = operating_point(figures.summary, cut)
            quality.update(
                threshold=pooled.get("threshold"),
                threshold_logit=cut,
                sensitivity=_finite(sens),
                specificity=_finite(spec),
            )
        self.store.record_clinic_result(
            self.run_id,
            server_round,
            reply.clinic,
            reply.node_id,
            "holdout",
            loss=_finite(figures.loss) if figures else None,
            num_examples=reply.num_examples,
            accuracy=_finite(figures.accuracy) if figures else None,
            auroc=_finite(figures.auroc) if figures else None,
            device=reply.device,
            quality=quality or None,
            per_class=figures.stored_per_class(self.spec.labels) if figures else None,
            scores=stored_scores(figures),
        )

    def round_metrics(
        self, server_round: int, phase: str, metrics: MetricRecord | None, replies: list[ClinicReply]
    ) -> None:
        server_round += self.offset
        ok = [r for r in replies if not r.error]
        if phase == "train":
            self._flush_contributions()
            if metrics is not None and "train_loss" in metrics:
                self.store.record_round(self.run_id, server_round, train_loss=_finite(float(metrics["train_loss"])))
            received = [r for r in ok if "val_examples" in r.metrics]
            if received:
                self._validation(server_round - 1, received)
        elif ok:
            self._validation(server_round, ok)

    def _validation(self, server_round: int, replies: list[ClinicReply]) -> None:
        """The round's figures: clinic mean, pooled (the headline) and the selected
        checkpoint (best pooled AUROC so far; the earliest round on ties)."""
        values = weighted_validation(replies)
        pooled = pooled_validation(replies)
        self.val_auroc[server_round] = pooled.get("auroc")
        self.pooled[server_round] = pooled
        self.store.record_round(
            self.run_id,
            server_round,
            **values,
            pooled=pooled or None,
            per_class=pooled_classes(replies, self.spec.labels),
            num_clinics=len(replies),
            num_examples=int(sum(v.examples for r in replies if (v := r.validation()) is not None)),
        )
        self.store.set_checkpoint_metric(self.run_id, server_round, pooled.get("auroc"))
        score = pooled.get("auroc")
        self._evaluated = max(self._evaluated, server_round)
        if server_round > 0 and score is not None and (self.best is None or score > self.best[1]):
            self.best = (server_round, score)
            self.store.select_round(self.run_id, server_round)

    def stop_after(self, server_round: int, patience: int) -> bool:
        """Early stopping, asked once round `server_round` has trained: True (and recorded)
        when the newest evaluated model is `patience` rounds past the best one."""
        server_round += self.offset
        if self.best is None or self._evaluated - self.best[0] < patience:
            return False
        self.stopped_at = server_round
        note = (
            f"stopped early after round {server_round}: pooled AUROC not better than round "
            f"{self.best[0]}'s {self.best[1]:.3f} for {self._evaluated - self.best[0]} rounds "
            f"(patience {patience})"
        )
        log.info("%s", note)
        self.store.stop_early(self.run_id, server_round, note)
        return True

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's evaluate_fn: runs at the end of every round; round 0 is skipped, and so
        are the rounds Flower still loops through after an early stop."""
        if server_round == 0:  # the initial model (a resumed run's is already checkpointed)
            # Flower calls this once before round 1: the ServerApp's start-up (imports, the
            # initial model, the clinics' roll call) is the run's, not round 1's
            log.info("run set-up took %.1f s before round %d", time.monotonic() - self._round_started, self.offset + 1)
            self._round_started = time.monotonic()
            return None
        server_round += self.offset
        if self.stopped_at is not None and server_round > self.stopped_at:
            return None
        path = self.checkpoint_dir / f"round-{server_round:03d}.pt"
        state = arrays.to_torch_state_dict()
        if self.frozen:  # head-only rounds: the checkpoint is still the whole model
            merged = {**self.frozen, **state}
            state = {k: merged[k] for k in (self.key_order or merged)}
        torch.save(
            {
                "state_dict": state,
                "round": server_round,
                "spec": self.spec.to_json(),
                "normalisation": self.normalisation,
            },
            path,
        )
        metric = self.val_auroc.get(server_round)
        self.store.record_checkpoint(self.run_id, server_round, str(path), sha256_file(path), "pooled_auroc", metric)
        duration = time.monotonic() - self._round_started
        down, up = self._traffic.get(server_round, (None, None))
        self.store.record_round(self.run_id, server_round, duration_s=duration, bytes_down=down, bytes_up=up)
        self._round_started = time.monotonic()
        log.info("round %d checkpoint %s (pooled AUROC=%s, %.1f s)", server_round, path, metric, duration)
        return None
