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


def first_arrays(msg: Message):
    """The one ArrayRecord a train reply carries (None if it carries none)."""
    records = list(msg.content.array_records.values()) if not msg.has_error() else []
    return records[0] if records else None


def update_problem(arrays, reference) -> tuple[str, float]:
    """('' or why the update is unusable, L2 norm of update minus reference).

    Checks key set, shapes, dtypes and finiteness; integer buffers (BatchNorm step
    counters) are compared for shape only.
    """
    import numpy as np

    if arrays is None:
        return "reply carries no weights", 0.0
    if set(arrays.keys()) != set(reference.keys()):
        return "weights have different keys than the global model", 0.0
    total = 0.0
    for key in reference.keys():
        new, old = arrays[key], reference[key]
        if tuple(new.shape) != tuple(old.shape):
            return f"shape of {key} is {tuple(new.shape)}, expected {tuple(old.shape)}", 0.0
        if new.dtype != old.dtype and not _both_numeric(new.dtype, old.dtype):
            return f"dtype of {key} is {new.dtype}, expected {old.dtype}", 0.0
        values = new.numpy()
        if not np.issubdtype(values.dtype, np.floating):
            continue
        if not np.isfinite(values).all():
            return f"non-finite values in {key}", 0.0
        total += float(np.square(values.astype(np.float64) - old.numpy()).sum())
    return "", math.sqrt(total)


def _both_numeric(a: str, b: str) -> bool:
    """Flower's aggregation turns int buffers into float64: accept numeric↔numeric."""
    return all(any(t in str(d) for t in ("float", "int")) for d in (a, b))


def norm_outliers(norms: dict[str, float], factor: float) -> dict[str, str]:
    """Clinics whose update norm exceeds `factor` × the median of the others' (needs ≥ 3)."""
    import statistics

    out = {}
    if len(norms) < 3:
        return out
    for node, norm in norms.items():
        median = statistics.median(v for k, v in norms.items() if k != node)
        if median > 0 and norm > factor * median:
            out[node] = f"update norm {norm:.3g} is over {factor:g}x the median of the others ({median:.3g})"
    return out
