"""Checks every clinic update before any strategy aggregates it.

A clinic's update is excluded, with the reason recorded, when its weights are not
finite, do not match the global model's keys, shapes or dtypes, or when its norm is an
outlier against the other clinics of the round (more than `norm_factor` times the
median of the others; needs three or more clinics). The round goes on with the rest
when at least `min_accept` remain; otherwise it fails and the previous global model
(already checkpointed) stays. Updates are aggregated in clinic order, not arrival
order, so that the same seed gives the same model.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from strategies.recording import NoClinicResult
from strategies.utils import first_arrays, in_clinic_order, norm_outliers, parse_reply, screen_updates


class GuardMixin:
    """Put between RecordingMixin and the Flower strategy class."""

    norm_factor: float = 10.0
    min_accept: int = 1

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        self._sent = {m.metadata.dst_node_id for m in messages}
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = in_clinic_order(list(replies))
        failed = [parse_reply(m) for m in replies if m.has_error()]
        replies = [m for m in replies if not m.has_error()]
        late = self._sent - {m.metadata.src_node_id for m in replies} - {int(r.node_id) for r in failed}
        reasons = self._screen(replies)
        for node in late:
            self.recorder.late(server_round, str(node))  # type: ignore[attr-defined]
        kept = [m for m in replies if str(m.metadata.src_node_id) not in reasons]
        for m in replies:
            if str(m.metadata.src_node_id) in reasons:
                self.recorder.excluded(
                    server_round,
                    parse_reply(m),  # type: ignore[attr-defined]
                    reasons[str(m.metadata.src_node_id)],
                )
        if len(kept) < self.min_accept:
            problems = sorted(set(reasons.values())) + [f"{r.clinic}: {r.error}" for r in failed]
            detail = "; ".join(problems) or "no clinic replied before the round timeout"
            raise NoClinicResult(
                f"round {server_round}: only {len(kept)} of {len(self._sent)} "
                f"clinic updates usable (need {self.min_accept}): {detail}"
            )
        return super().aggregate_train(server_round, kept)  # type: ignore[misc]

    def _screen(self, replies: list[Message]) -> dict[str, str]:
        updates = {str(m.metadata.src_node_id): first_arrays(m) for m in replies}
        reasons, norms = screen_updates(updates, self._global)
        reasons.update(norm_outliers(norms, self.norm_factor))
        return reasons
