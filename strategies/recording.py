"""A mixin that makes any Flower strategy record every round and every clinic's result.

Flower's strategies aggregate; radfed also needs to know who contributed what, each
round, in the database. The mixin wraps `aggregate_train` / `aggregate_evaluate`, hands
each parsed reply to a recorder (the server's store writer) and then defers to Flower.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from flwr.app import ArrayRecord, Message, MetricRecord

from strategies.utils import ClinicReply, parse_reply


class RoundRecorder(Protocol):
    """What a recording strategy reports to (implemented by server.recorder)."""

    def clinic_replies(self, server_round: int, phase: str, replies: list[ClinicReply]) -> None: ...

    def round_metrics(self, server_round: int, phase: str, metrics: MetricRecord | None,
                      replies: list[ClinicReply]) -> None: ...


class NoClinicResult(RuntimeError):
    """A round in which no clinic returned a usable result: the run cannot go on."""


class RecordingMixin:
    """Put before a Flower strategy class: `class X(RecordingMixin, FedAvg)`."""

    recorder: RoundRecorder

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        parsed = self._record(server_round, "train", replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        self.recorder.round_metrics(server_round, "train", metrics, parsed)
        if arrays is None:
            raise NoClinicResult(_why_empty(server_round, "training", parsed))
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        parsed = self._record(server_round, "evaluate", replies)
        metrics = super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
        self.recorder.round_metrics(server_round, "evaluate", metrics, parsed)
        if metrics is None:
            raise NoClinicResult(_why_empty(server_round, "evaluation", parsed))
        return metrics

    def _record(self, server_round: int, phase: str, replies: list[Message]) -> list[ClinicReply]:
        parsed = [parse_reply(m) for m in replies]
        self.recorder.clinic_replies(server_round, phase, parsed)
        return parsed


def _why_empty(server_round: int, phase: str, parsed: list[ClinicReply]) -> str:
    errors = [f"{r.clinic}: {r.error}" for r in parsed if r.error]
    detail = "; ".join(errors) if errors else "no clinic replied before the round timeout"
    return f"round {server_round}: no clinic returned a {phase} result ({detail})"
