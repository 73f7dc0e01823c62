"""A mixin that makes any Flower strategy record every round and every clinic's result.

Flower's strategies aggregate; radfed also needs to know who contributed what, each
round, in the database. The mixin wraps `aggregate_train` / `aggregate_evaluate`, hands
each parsed reply to a recorder (the server's store writer) and then defers to Flower.

Evaluate on receive: a clinic evaluates the global model it receives with each train
message before training on it, so the model of round r is evaluated during round r + 1,
and a separate evaluate broadcast (one more full model to every clinic) is only needed
after the last round. Same model, same held-out patients, same numbers; one model
transfer per round instead of two.

Early stopping (spec `patience`): when round r's train replies show that the pooled
AUROC has not improved for `patience` rounds (the recorder's `stop_after`), round r is
the last: its model gets the final evaluate broadcast, and the rounds Flower still
loops through send nothing, aggregate nothing and checkpoint nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from strategies.utils import ClinicReply, model_bytes, parse_reply


class RoundRecorder(Protocol):
    """What a recording strategy reports to (implemented by server.recorder)."""

    def clinic_replies(self, server_round: int, phase: str, replies: list[ClinicReply]) -> None: ...

    def round_metrics(
        self, server_round: int, phase: str, metrics: MetricRecord | None, replies: list[ClinicReply]
    ) -> None: ...

    def sent(self, server_round: int, phase: str, bytes_by_node: dict[str, int]) -> None: ...

    def stop_after(self, server_round: int, patience: int) -> bool: ...

    def roll_call(self, server_round: int, online: list[str]) -> None: ...


class NoClinicResult(RuntimeError):
    """A round in which no clinic returned a usable result: the run cannot go on."""


class RecordingMixin:
    """Put before a Flower strategy class: `class X(RecordingMixin, FedAvg)`.

    `final_round` is the last round number: the only one with an evaluate broadcast.
    """

    recorder: RoundRecorder
    final_round: int = 1
    patience: int = 0
    stopped_at: int | None = None  # the round early stopping made the last one

    def _done(self, server_round: int) -> bool:
        return self.stopped_at is not None and server_round > self.stopped_at

    def _last(self, server_round: int) -> bool:
        return server_round == (self.stopped_at or self.final_round)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if self._done(server_round):
            return []
        config["evaluate-received"] = True  # round 1: the initial model, recorded as round 0
        self.recorder.roll_call(server_round, [str(n) for n in grid.get_node_ids()])
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        return self._report_sent(server_round, "train", messages)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if not self._last(server_round):
            return []
        self.recorder.roll_call(server_round, [str(n) for n in grid.get_node_ids()])
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]
        return self._report_sent(server_round, "evaluate", messages)

    def _report_sent(self, server_round: int, phase: str, messages: list[Message]) -> list[Message]:
        """Report the model bytes going to each clinic (messages may share one payload)."""
        sizes: dict[int, int] = {}
        self.recorder.sent(
            server_round,
            phase,
            {str(m.metadata.dst_node_id): sizes.setdefault(id(m.content), model_bytes(m.content)) for m in messages},
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._done(server_round):
            return None, None
        replies = list(replies)
        parsed = self._record(server_round, "train", replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        self.recorder.round_metrics(server_round, "train", metrics, parsed)
        if arrays is None:
            raise NoClinicResult(_why_empty(server_round, "training", parsed))
        if self.patience and server_round < self.final_round and self.recorder.stop_after(server_round, self.patience):
            self.stopped_at = server_round
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        if not self._last(server_round):
            return None  # this round's model is evaluated on receipt, in the next round
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
