"""Packed transport (radfed.packing): a model's tensors travel as one index and one data
array, and come back bit for bit, whatever they hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client_node.packing import packing_mod
from radfed.packing import (
    DATA_KEY,
    INDEX_KEY,
    PackingError,
    is_packed,
    pack_message_records,
    pack_record,
    unpack_message_records,
    unpack_record,
)
from radfed.transfer import cast_array


def _record() -> ArrayRecord:
    rng = np.random.default_rng(0)
    record = ArrayRecord()
    record["conv.weight"] = Array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32))
    record["bn.num_batches_tracked"] = Array(np.array(7, dtype=np.int64))  # 0-d
    record["empty"] = Array(np.zeros((0, 5), dtype=np.float32))
    record["half"] = cast_array(rng.normal(size=(6,)).astype(np.float32), "bfloat16")  # radfed stype
    record["fc.bias"] = Array(torch.tensor([1.5, -2.0]))
    return record


def _same(a: ArrayRecord, b: ArrayRecord) -> None:
    assert list(a.keys()) == list(b.keys())
    for key in a.keys():
        x, y = a[key], b[key]
        assert (x.dtype, tuple(x.shape), x.stype, x.data) == (y.dtype, tuple(y.shape), y.stype, y.data), key


def test_a_record_packs_into_two_arrays_and_unpacks_bit_for_bit():
    record = _record()
    packed = pack_record(record)
    assert is_packed(packed) and list(packed.keys()) == [INDEX_KEY, DATA_KEY]
    assert len(packed[DATA_KEY].data) == sum(len(a.data) for a in record.values())
    _same(unpack_record(packed), record)
    assert not is_packed(record)


def test_a_broken_packed_record_raises_one_line():
    packed = pack_record(_record())
    cut = ArrayRecord()
    cut[INDEX_KEY] = packed[INDEX_KEY]
    data = packed[DATA_KEY]
    cut[DATA_KEY] = Array(dtype="uint8", shape=(len(data.data) - 4,), stype=data.stype, data=data.data[:-4])
    with pytest.raises(PackingError, match="holds") as err:
        unpack_record(cut)
    assert "\n" not in str(err.value)
    garbage = ArrayRecord()
    garbage[INDEX_KEY] = Array(dtype="uint8", shape=(3,), stype=packed[INDEX_KEY].stype, data=b"{[}")
    garbage[DATA_KEY] = data
    with pytest.raises(PackingError, match="does not decode"):
        unpack_record(garbage)


def test_messages_sharing_a_model_share_one_packed_copy():
    model = _record()
    contents = [RecordDict({"arrays": model, "config": ConfigRecord({"x": 1})}) for _ in range(3)]
    cache: dict = {}
    for content in contents:
        pack_message_records(content, cache)
    assert len({id(c.array_records["arrays"]) for c in contents}) == 1
    assert "config" in contents[0].config_records
    assert unpack_message_records(contents[0]) and not unpack_message_records(contents[0])
    _same(contents[0].array_records["arrays"], model)


def test_the_clinic_mod_mirrors_the_server(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):  # as inside a ServerApp
        monkeypatch.setattr(TaskIdentity, name, value)
    seen = []

    def handler(msg: Message, context: Context) -> Message:
        seen.append(msg.content.array_records["arrays"])
        return Message(RecordDict({"arrays": _record()}), reply_to=msg)

    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    for send_packed in (True, False):
        content = RecordDict({"arrays": _record()})
        if send_packed:
            pack_message_records(content, {})
        msg = Message(content, dst_node_id=2, message_type="train")
        reply = packing_mod(msg, context, handler)
        assert not is_packed(seen[-1])  # the handler sees the tensors themselves
        _same(seen[-1], _record())
        assert is_packed(reply.content.array_records["arrays"]) == send_packed
