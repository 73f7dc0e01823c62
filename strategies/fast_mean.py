"""FedAvg's aggregation with radfed's weighted mean (strategies.utils.weighted_mean).

Same steps as Flower's `FedAvg.aggregate_train` (reply checks, weighted mean of arrays,
metric aggregation), with an aggregation primitive that keeps peak memory at the
updates plus one model; bench/aggregate.py measures both.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord

from strategies.utils import weighted_mean


class FastMeanMixin:
    """Put directly before a weighted-mean Flower strategy (FedAvg, FedProx)."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)  # type: ignore[attr-defined]
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        arrays = weighted_mean(contents, self.weighted_by_key)  # type: ignore[attr-defined]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)  # type: ignore[attr-defined]
        return arrays, metrics
