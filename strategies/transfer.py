"""Half-precision transfer at the strategy's edge (spec `transfer_dtype`, radfed.transfer).

Outgoing train and evaluate messages carry the global model's parameters in the
transfer dtype; incoming replies are turned back into float32 models (the float32
global model plus each clinic's change) before anything else reads them. So the
guards, Flower's strategies, the differential-privacy wrappers (clipping and noise)
and the checkpoints all work in float32, exactly as without the option, and the model
the server holds is never rounded.

The mixin sits right after RecordingMixin: the recorder counts the bytes that really
travel (encoded, both ways), and everything below it sees float32 only. The frozen
backbone of head-only rounds is attached below it and travels float32: it goes once per
clinic and run, and the clinic checks it against its digest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from radfed.transfer import TransferError, decode_record, encode_record

log = logging.getLogger("radfed.server")
ARRAYS_KEY = "arrays"  # the record of a message that holds the model (Flower's default)


class TransferMixin:
    """Put right after RecordingMixin. `transfer_dtype` "float32" turns it off;
    `transfer_keep` names tensors that stay float32 (the model's buffers)."""

    transfer_dtype: str = "float32"
    transfer_keep: set[str] = set()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._reference = arrays
        return self._encode(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._encode(super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]

    def _encode(self, messages: Iterable[Message]) -> list[Message]:
        """Encode each distinct model record once (messages share their payloads)."""
        messages = list(messages)
        if self.transfer_dtype == "float32":
            return messages
        encoded: dict[int, ArrayRecord] = {}
        done: set[int] = set()
        for msg in messages:
            record = msg.content.array_records.get(ARRAYS_KEY)
            if record is None or id(record) in done:
                continue
            if id(record) not in encoded:
                encoded[id(record)] = encode_record(record, self.transfer_dtype, self.transfer_keep)
                done.add(id(encoded[id(record)]))
            msg.content[ARRAYS_KEY] = encoded[id(record)]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if self.transfer_dtype != "float32":
            for msg in replies:
                self._decode(msg)
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def _decode(self, msg: Message) -> None:
        """A reply as float32 weights: the global model sent plus the clinic's change. One
        that cannot be decoded loses its weights (the guards then exclude it, with why)."""
        if msg.has_error():
            return
        for name, record in list(msg.content.array_records.items()):
            try:
                decode_record(record, self._reference)
            except TransferError as err:
                log.warning("node %s: undecodable update (%s)", msg.metadata.src_node_id, err)
                del msg.content[name]
