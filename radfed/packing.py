"""A model's tensors packed into one Flower array for the trip, so they travel as a few objects.

Flower 1.42 moves a message's `ArrayRecord` as one stored object per tensor plus one per
5 MB chunk, each its own HTTP request through the SuperLink (node signature checked, run
state looked up in SQL). A ResNet18 is 122 tensors, a ResNet50 320, a DenseNet121 over
600: on 2 cores those requests, not the bytes, made a clinic wait 15-50 s for a 45 MB
model on loopback. Packed, the same bytes are one index and one data array: a handful
of 5 MB chunks.

`pack_record` concatenates the raw bytes of every array (exactly as Flower stores them:
dtype, shape and stype kept in a JSON index); `unpack_record` rebuilds an identical
`ArrayRecord`, in the same key order. Only the transport sees packed records: the
ServerApp's grid packs what it pushes and unpacks what it pulls (server.packing_grid), the
clinic's ClientApp does the reverse (client_node.packing); strategies, guards, the
recorder, the outbox log and the models never see one.
"""

from __future__ import annotations

import json

from flwr.app import Array, ArrayRecord

DATA_KEY, INDEX_KEY = "radfed.packed", "radfed.packed.index"
DATA_STYPE, INDEX_STYPE = "radfed.pack/v1", "radfed.pack-index/v1"


class PackingError(ValueError):
    """A packed record that does not decode (one line, no contents)."""


def is_packed(record: ArrayRecord) -> bool:
    keys = list(record.keys())
    return (
        keys == [INDEX_KEY, DATA_KEY]
        and record[DATA_KEY].stype == DATA_STYPE
        and record[INDEX_KEY].stype == INDEX_STYPE
    )


def _bytes_array(data: bytes, stype: str) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype=stype, data=data)


def pack_record(record: ArrayRecord) -> ArrayRecord:
    """`record` as one index array and one data array (a new record; `record` unchanged)."""
    index = [[key, a.dtype, list(a.shape), a.stype, len(a.data)] for key, a in record.items()]
    packed = ArrayRecord()
    packed[INDEX_KEY] = _bytes_array(json.dumps(index).encode(), INDEX_STYPE)
    packed[DATA_KEY] = _bytes_array(b"".join(a.data for a in record.values()), DATA_STYPE)
    return packed


def unpack_record(packed: ArrayRecord) -> ArrayRecord:
    """The `ArrayRecord` that `pack_record` packed."""
    try:
        index = json.loads(packed[INDEX_KEY].data)
        data = memoryview(packed[DATA_KEY].data)
        record, offset = ArrayRecord(), 0
        for key, dtype, shape, stype, length in index:
            record[str(key)] = Array(
                dtype=str(dtype),
                shape=tuple(int(n) for n in shape),
                stype=str(stype),
                data=bytes(data[offset : offset + int(length)]),
            )
            offset += int(length)
    except (KeyError, TypeError, ValueError) as err:
        raise PackingError(f"a packed model record does not decode ({type(err).__name__})") from None
    if offset != len(data):
        raise PackingError(f"a packed model record holds {len(data)} bytes, its index {offset}")
    return record


def pack_message_records(content, cache: dict[int, ArrayRecord]) -> None:
    """Replace, in place, every non-empty, not yet packed ArrayRecord of a message's
    content by its packed form; `cache` (id of a record → packed record) lets messages that
    share a model share its packed form, so the SuperLink stores it once."""
    for name, record in list(content.array_records.items()):
        if not len(record) or is_packed(record):
            continue
        if id(record) not in cache:
            cache[id(record)] = pack_record(record)
        content[name] = cache[id(record)]


def unpack_message_records(content) -> bool:
    """Replace, in place, every packed ArrayRecord of a message's content by the record it
    packed; True if there was one."""
    found = False
    for name, record in list(content.array_records.items()):
        if is_packed(record):
            content[name] = unpack_record(record)
            found = True
    return found
