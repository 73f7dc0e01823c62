"""The run's Grid with models packed for the trip (radfed.packing), as the clinics expect.

`PackingGrid` wraps Flower's Grid, under every other wrapper (membership, hold-out):
each message it pushes has its ArrayRecords packed into one index and one data array
(messages that share a model share one packed copy, stored once by the SuperLink), and
each reply it pulls is unpacked before anything above reads it. So a ResNet50 round trip
is a few dozen stored objects instead of several hundred. A reply whose packed record
does not decode loses that record (the guards then exclude the update, saying why).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Message

from radfed.packing import PackingError, pack_message_records, unpack_message_records
from server.grid_wrapper import WrappedGrid
from server.round_trip import send_and_receive

log = logging.getLogger("radfed.server")


class PackingGrid(WrappedGrid):
    """Packs pushed messages' models, unpacks pulled replies'; otherwise Flower's Grid."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages, shared = list(messages), {}
        for message in messages:
            if not message.has_error():
                pack_message_records(message.content, shared)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            if reply.has_error():
                continue
            try:
                unpack_message_records(reply.content)
            except PackingError as err:
                log.warning("node %s: %s", reply.metadata.src_node_id, err)
                for name in list(reply.content.array_records):
                    del reply.content[name]
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return send_and_receive(self, messages, timeout=timeout)
