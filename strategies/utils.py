"""Helpers shared by radfed's strategies: reply parsing and metric aggregation."""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from radfed.data_card import DATA_CARD_RECORD
from radfed.delivery import RECEIPT_RECORD
from radfed.reply import ClinicValidation

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
    receipt: dict | None = None  # a delivery's acknowledgement: model kind -> digest stored
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_examples(self) -> int:
        return int(self.metrics.get(NUM_EXAMPLES, 0))

    def validation(self) -> ClinicValidation | None:
        """The clinic's figures for the model it evaluated (radfed.reply), None if none;
        read once per reply (the recorder asks for them per row, pooled and mean)."""
        if self.error:
            return None
        if "validation" not in self._cache:
            self._cache["validation"] = ClinicValidation.from_metrics(self.metrics, self.lists)
        return self._cache["validation"]


def model_bytes(content: RecordDict) -> int:
    """Bytes of every tensor a message carries (serialised array payloads, as sent)."""
    return sum(len(array.data) for record in content.array_records.values() for array in record.values())


def in_clinic_order(replies: list[Message]) -> list[Message]:
    """Replies sorted by clinic name, then node id, whatever order they arrived in.

    Aggregation sums updates in the order given; float sums in another order differ in
    the last bits, and a few rounds of training amplify that. Sorting makes a run with
    the same seed, clinics and data give the same model again.
    """

    def key(msg: Message) -> tuple[str, int]:
        name = "" if msg.has_error() else str(msg.content.config_records.get("clinic", {}).get("name", ""))
        return name, int(msg.metadata.src_node_id)

    return sorted(replies, key=key)


def parse_reply(msg: Message) -> ClinicReply:
    """Read a reply's sender, metrics and the clinic's self-description."""
    node_id = str(msg.metadata.src_node_id)
    if msg.has_error():
        return ClinicReply(node_id, f"node-{node_id}", None, {}, msg.error.reason)
    content = msg.content
    metrics, lists = split_metrics(list(content.metric_records.values()))
    info = content.config_records.get("clinic", {})
    return ClinicReply(
        node_id,
        str(info.get("name", f"node-{node_id}")),
        info.get("device"),
        metrics,
        lists=lists,
        bytes_up=model_bytes(content),
        data_card=_data_card(content),
        receipt=_receipt(content),
    )


def split_metrics(records: list[MetricRecord]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(single numbers, lists) of a reply's MetricRecords, as floats."""
    metrics: dict[str, float] = {}
    lists: dict[str, list[float]] = {}
    for record in records:
        metrics.update({k: float(v) for k, v in record.items() if not isinstance(v, list)})
        lists.update({k: [float(x) for x in v] for k, v in record.items() if isinstance(v, list)})
    return metrics, lists


def _receipt(content: RecordDict) -> dict | None:
    """A delivery acknowledgement (client_node.delivery): model kind -> digest, strings only."""
    record = content.config_records.get(RECEIPT_RECORD)
    if record is None:
        return None
    return {str(k): str(v)[:64] for k, v in record.items() if isinstance(v, str)}


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
    out[weighted_by_key] = int(sum(r.get(weighted_by_key, 0) for c in contents for r in c.metric_records.values()))
    return out


def first_arrays(msg: Message):
    """The one ArrayRecord a train reply carries (None if it carries none)."""
    records = list(msg.content.array_records.values()) if not msg.has_error() else []
    return records[0] if records else None


def array_view(array) -> np.ndarray:
    """A read-only numpy view of a Flower Array's bytes.

    `Array.numpy()` runs `np.load`, which parses the header and copies the whole
    tensor; aggregation only reads the clinics' updates, so a view over the bytes they
    already occupy saves one copy per tensor and clinic, and the header (the same for
    every clinic) is parsed once (bench/aggregate.py). Falls back to `numpy()` for
    anything but a plain .npy v1/v2 payload.
    """
    import numpy as np

    data = array.data
    if array.stype == "numpy.ndarray" and data[:6] == b"\x93NUMPY" and data[6] in (1, 2):
        size = 2 if data[6] == 1 else 4
        offset = 8 + size + int.from_bytes(data[8 : 8 + size], "little")
        parsed = _npy_header(data[:offset])
        if parsed is not None:
            shape, fortran, dtype = parsed
            count = math.prod(shape)
            if count > 0:
                flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
                return flat.reshape(shape, order="F" if fortran else "C")
    return array.numpy()


@functools.lru_cache(maxsize=8192)
def _npy_header(header: bytes):
    """(shape, fortran order, dtype) of a .npy header, or None when a view cannot serve."""
    import numpy as np

    fmt = np.lib.format
    stream = io.BytesIO(header)
    try:
        version = fmt.read_magic(stream)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except ValueError:
        return None
    return None if dtype.hasobject else (shape, fortran, dtype)


_CHUNK = 1 << 16  # elements per step of the fused passes: small enough to stay in cache


def _squared_change(new, old, buffers: dict) -> float:
    """Squared L2 norm of `new - old`, in cache-sized chunks through a reused buffer.

    One read of each array and no tensor-sized temporary; NaN or inf anywhere makes
    the result non-finite, so the same pass is the finiteness check.
    """
    import numpy as np

    kind = np.result_type(new.dtype, old.dtype, np.float32)
    buf = buffers.get(kind)
    if buf is None:
        buf = buffers[kind] = np.empty(_CHUNK, kind)
    new, old = new.reshape(-1), old.reshape(-1)
    total = 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, new.size, _CHUNK):
            part = buf[: min(_CHUNK, new.size - start)]
            np.subtract(new[start : start + _CHUNK], old[start : start + _CHUNK], out=part)
            total += float(np.dot(part, part))
    return total


def screen_updates(updates: dict, reference) -> tuple[dict[str, str], dict[str, float]]:
    """(why each unusable update is refused, L2 norm of each usable update's change).

    `updates` maps a node id to its reply's ArrayRecord (or None); `reference` is the
    round's global ArrayRecord. Checks key set, shapes, dtypes and finiteness. Works one
    tensor at a time across all clinics on read-only views of the replies' bytes, with
    the difference, its norm and the finiteness check fused in one pass per tensor
    (bench/aggregate.py: time and peak memory). Integer buffers (BatchNorm step
    counters) are checked for shape only.
    """
    problems: dict[str, str] = {}
    squares = {node: 0.0 for node in updates}
    keys = set(reference.keys())
    buffers: dict = {}
    for node, arrays in updates.items():
        if arrays is None:
            problems[node] = "reply carries no weights"
        elif set(arrays.keys()) != keys:
            problems[node] = "weights have different keys than the global model"
    for key in reference.keys():
        old = array_view(reference[key])
        for node, arrays in updates.items():
            if node in problems:
                continue
            new = array_view(arrays[key])
            problems.update({node: p} if (p := _tensor_problem(key, new, old)) else {})
            if node in problems or old.dtype.kind != "f":
                continue
            square = _squared_change(new, old, buffers)
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


def weighted_mean(contents: list[RecordDict], weighted_by_key: str, keys: list[str] | None = None):
    """Example-weighted mean of the replies' ArrayRecords (or of their `keys`), one tensor at a time.

    Same result as Flower's `aggregate_arrayrecords`, but read from views of the
    replies' bytes and accumulated in place in cache-sized chunks through one reused
    buffer, each output tensor serialised before the next is touched: peak memory stays
    near the updates themselves plus one tensor (bench/aggregate.py).
    """
    import numpy as np
    from flwr.app import Array, ArrayRecord

    records = [next(iter(c.array_records.values())) for c in contents]
    weights = [float(next(iter(c.metric_records.values()))[weighted_by_key]) for c in contents]
    total = sum(weights)
    factors = [w / total for w in weights]
    out = {}
    scratch: dict = {}
    for key in records[0].keys() if keys is None else keys:
        views = [array_view(record[key]) for record in records]
        kind = views[0].dtype if views[0].dtype.kind == "f" else np.dtype(np.float64)
        acc = np.empty(views[0].shape, kind)
        _accumulate(acc.reshape(-1), [v.reshape(-1) for v in views], factors, scratch)
        out[key] = Array(acc)
    return ArrayRecord(out)


def _accumulate(acc, views: list, factors: list[float], scratch: dict) -> None:
    """acc = sum(factor * view), chunk by chunk so every operand stays in cache."""
    import numpy as np

    tmp = scratch.get(acc.dtype)
    if tmp is None:
        tmp = scratch[acc.dtype] = np.empty(_CHUNK, acc.dtype)
    for start in range(0, acc.size, _CHUNK):
        out = acc[start : start + _CHUNK]
        part = tmp[: out.size]
        np.multiply(views[0][start : start + _CHUNK], factors[0], out=out, casting="unsafe")
        for view, factor in zip(views[1:], factors[1:]):
            np.multiply(view[start : start + _CHUNK], factor, out=part, casting="unsafe")
            out += part


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
