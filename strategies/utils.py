"""Helpers shared by radfed's strategies: reply parsing and metric aggregation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from flwr.app import Message, MetricRecord, RecordDict

from radfed.data import DATA_CARD_RECORD

NUM_EXAMPLES = "num-examples"
MAX_DATA_CARD_CHARS = 65536  # a data card is a few hundred bytes of counts


@dataclass
class ClinicReply:
    """One clinic's metrics from a reply, with who sent it (never data about patients)."""

    node_id: str
    clinic: str
    device: str | None
    metrics: dict[str, float]
    error: str | None = None
    lists: dict[str, list[float]] = field(default_factory=dict)  # per-bin counts (pooled figures)
    bytes_up: int = 0  # model bytes in the reply

    data_card: dict | None = None  # counts only (ClinicData.shared_card), first reply of a run

    @property
    def num_examples(self) -> int:
        return int(self.metrics.get(NUM_EXAMPLES, 0))


def model_bytes(content: RecordDict) -> int:
    """Bytes of every tensor a message carries (serialised array payloads, as sent)."""
    return sum(len(array.data) for record in content.array_records.values()
               for array in record.values())


def parse_reply(msg: Message) -> ClinicReply:
    """Read a reply's sender, metrics and the clinic's self-description."""
    node_id = str(msg.metadata.src_node_id)
    if msg.has_error():
        return ClinicReply(node_id, f"node-{node_id}", None, {}, msg.error.reason)
    content = msg.content
    metrics: dict[str, float] = {}
    lists: dict[str, list[float]] = {}
    for record in content.metric_records.values():
        metrics.update({k: float(v) for k, v in record.items() if not isinstance(v, list)})
        lists.update({k: [float(x) for x in v] for k, v in record.items() if isinstance(v, list)})
    info = content.config_records.get("clinic", {})
    return ClinicReply(node_id, str(info.get("name", f"node-{node_id}")),
                       info.get("device"), metrics, lists=lists,
                       bytes_up=model_bytes(content), data_card=_data_card(content))


def _data_card(content: RecordDict) -> dict | None:
    """The reply's data card as a dict, or None when absent, oversized or not a JSON object."""
    record = content.config_records.get(DATA_CARD_RECORD)
    text = record.get("json") if record is not None else None
    if not isinstance(text, str) or len(text) > MAX_DATA_CARD_CHARS:
        return None
    try:
        card = json.loads(text)
    except ValueError:
        return None
    return card if isinstance(card, dict) else None


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


def first_arrays(msg: Message):
    """The one ArrayRecord a train reply carries (None if it carries none)."""
    records = list(msg.content.array_records.values()) if not msg.has_error() else []
    return records[0] if records else None


def screen_updates(updates: dict, reference) -> tuple[dict[str, str], dict[str, float]]:
    """(why each unusable update is refused, L2 norm of each usable update's change).

    `updates` maps a node id to its reply's ArrayRecord (or None); `reference` is the
    round's global ArrayRecord. Checks key set, shapes, dtypes and finiteness. Works one
    tensor at a time across all clinics, so only one tensor per clinic is decoded at
    once (bench/aggregate.py: peak memory). Integer buffers (BatchNorm step counters)
    are checked for shape only.
    """
    import numpy as np

    problems: dict[str, str] = {}
    squares = {node: 0.0 for node in updates}
    keys = set(reference.keys())
    for node, arrays in updates.items():
        if arrays is None:
            problems[node] = "reply carries no weights"
        elif set(arrays.keys()) != keys:
            problems[node] = "weights have different keys than the global model"
    for key in reference.keys():
        old = reference[key].numpy()
        for node, arrays in updates.items():
            if node in problems:
                continue
            problems.update({node: p} if (p := _tensor_problem(key, arrays[key], old)) else {})
            if node in problems or old.dtype.kind != "f":
                continue
            diff = (arrays[key].numpy() - old).ravel()
            square = float(np.dot(diff, diff))  # NaN or inf anywhere makes this non-finite
            if not math.isfinite(square):
                problems[node] = f"non-finite values in {key}"
            squares[node] += square
    return problems, {n: math.sqrt(v) for n, v in squares.items() if n not in problems}


def _tensor_problem(key: str, new, old) -> str:
    if tuple(new.shape) != tuple(old.shape):
        return f"shape of {key} is {tuple(new.shape)}, expected {tuple(old.shape)}"
    if str(new.dtype) != str(old.dtype) and not _both_numeric(new.dtype, str(old.dtype)):
        return f"dtype of {key} is {new.dtype}, expected {old.dtype}"
    return ""


def _both_numeric(a: str, b: str) -> bool:
    """Flower's aggregation turns int buffers into float64: accept numeric↔numeric."""
    return all(any(t in str(d) for t in ("float", "int")) for d in (a, b))


def weighted_mean(contents: list[RecordDict], weighted_by_key: str):
    """Example-weighted mean of the replies' ArrayRecords, one tensor at a time.

    Same result as Flower's `aggregate_arrayrecords`, but each output tensor is
    accumulated in place and serialised before the next is touched, so peak memory
    stays near the updates themselves plus one model (bench/aggregate.py).
    """
    import numpy as np
    from flwr.app import Array, ArrayRecord

    records = [next(iter(c.array_records.values())) for c in contents]
    weights = [float(next(iter(c.metric_records.values()))[weighted_by_key]) for c in contents]
    total = sum(weights)
    out = {}
    for key in records[0].keys():
        acc = None
        for record, weight in zip(records, weights):
            values = record[key].numpy()
            values = values if values.dtype.kind == "f" else values.astype(np.float64)
            values *= weight / total
            if acc is None:
                acc = values
            else:
                acc += values
        out[key] = Array(acc)
    return ArrayRecord(out)


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
