"""Helpers shared by radfed's strategies: reply parsing and metric aggregation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message, MetricRecord, RecordDict

NUM_EXAMPLES = "num-examples"


@dataclass
class ClinicReply:
    """One clinic's metrics from a reply, with who sent it (never data about patients)."""

    node_id: str
    clinic: str
    device: str | None
    metrics: dict[str, float]
    error: str | None = None

    @property
    def num_examples(self) -> int:
        return int(self.metrics.get(NUM_EXAMPLES, 0))


def parse_reply(msg: Message) -> ClinicReply:
    """Read a reply's sender, metrics and the clinic's self-description."""
    node_id = str(msg.metadata.src_node_id)
    if msg.has_error():
        return ClinicReply(node_id, f"node-{node_id}", None, {}, msg.error.reason)
    content = msg.content
    metrics: dict[str, float] = {}
    for record in content.metric_records.values():
        metrics.update({k: float(v) for k, v in record.items() if not isinstance(v, list)})
    info = content.config_records.get("clinic", {})
    return ClinicReply(node_id, str(info.get("name", f"node-{node_id}")),
                       info.get("device"), metrics)


def finite_weighted_mean(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Example-weighted mean of every metric, skipping non-finite values per key.

    A clinic whose validation split holds one class reports AUROC as NaN; Flower's
    default mean would turn the federation's AUROC into NaN, this one leaves it out.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for content in contents:
        for record in content.metric_records.values():
            weight = float(record.get(weighted_by_key, 0))
            for key, value in record.items():
                if key == weighted_by_key or isinstance(value, list):
                    continue
                if math.isfinite(float(value)) and weight > 0:
                    sums[key] = sums.get(key, 0.0) + float(value) * weight
                    weights[key] = weights.get(key, 0.0) + weight
    out = MetricRecord({k: sums[k] / weights[k] for k in sums})
    out[weighted_by_key] = int(sum(
        r.get(weighted_by_key, 0) for c in contents for r in c.metric_records.values()
    ))
    return out


def valid_replies(replies: Iterable[Message]) -> list[Message]:
    """Replies that carry content rather than an error."""
    return [m for m in replies if not m.has_error()]
