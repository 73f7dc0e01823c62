"""Membership is the register: the ServerApp sees only enrolled, active clinics.

Flower's Grid offers every node the SuperLink knows, and a reply names its clinic in
whatever its node config says. Under node authentication radfed trusts neither: a node
id is tied to the key the supervisor registered for one clinic in radfed's register.
`MemberGrid` wraps the run's Grid so that

- strategies sample, and messages go to, only node ids of clinics that are active in the
  register now (read on every call: a revocation holds mid-run, even while the SuperLink's
  Control API misbehaves and the key is still registered there);
- every reply is relabelled with the register's name for its sender's node id (a
  `clinic` config record or a legacy `clinic-name` entry), so records and the audit trail
  name clinics by key, never by what a reply claims;
- replies from any other node are dropped.

Whatever the mode, error replies are attributed to the node they concern: Flower answers
a message to a node that stopped sending heartbeats with an error from the SuperLink's own
node id, so the wrapper gives it the destination of the message it replies to, and the
recorder can say which clinic was lost.

The SuperLink passes the register's database in `RADFED_REGISTER_DB` (set only when node
authentication is on); without it (a loopback `--insecure` demo) every node may take part
and names come from the nodes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid

from radfed.audit import Registry
from server.grid_wrapper import WrappedGrid
from server.round_trip import send_and_receive

log = logging.getLogger("radfed.server")
REGISTER_ENV = "RADFED_REGISTER_DB"
NAME_KEYS = (("clinic", "name"),)  # (config record, key) a reply names its clinic in
LEGACY_NAME_KEY = "clinic-name"  # legacy (SecAgg+) replies carry it among their metrics


class MemberGrid(WrappedGrid):
    """The run's Grid limited to the register's active clinics, replies named by node id.

    Without a registry (no node authentication) it only attributes error replies.
    """

    def __init__(self, grid: Grid, registry: Registry | None) -> None:
        super().__init__(grid)
        self.registry = registry
        self._destination: dict[str, int] = {}  # message id → node it was sent to

    def members(self) -> dict[int, str] | None:
        """Node id → clinic name of every active clinic with a registered key (None: anyone)."""
        if self.registry is None:
            return None
        return {int(c.node_id): c.name for c in self.registry.clinics() if c.status == "active" and c.node_id}

    def get_node_ids(self) -> Iterable[int]:
        members = self.members()
        return [n for n in self._grid.get_node_ids() if members is None or n in members]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = self._to_members(messages)
        ids = list(self._grid.push_messages(messages))
        self._remember(messages)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._from_members(self._grid.pull_messages(message_ids))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Flower's exchange, pulling replies within half a second (server.round_trip)."""
        messages = self._to_members(messages)
        replies = send_and_receive(self._grid, messages, timeout=timeout)
        self._remember(messages)  # Flower set their ids when it pushed them
        return self._from_members(replies)

    def _remember(self, messages: list[Message]) -> None:
        for message in messages:
            if message.metadata.message_id:
                self._destination[message.metadata.message_id] = message.metadata.dst_node_id

    def _attribute(self, reply: Message) -> None:
        """An error reply from the SuperLink itself names the node it is about."""
        if reply.metadata.src_node_id == SUPERLINK_NODE_ID:
            node = self._destination.get(reply.metadata.reply_to_message_id)
            if node is not None:
                reply.metadata.__dict__["_src_node_id"] = node  # as Flower sets message ids

    def _to_members(self, messages: Iterable[Message]) -> list[Message]:
        members, kept = self.members(), []
        for message in messages:
            if members is None or message.metadata.dst_node_id in members:
                kept.append(message)
            else:
                log.warning(
                    "not sending to node %s: not an active clinic in the register", message.metadata.dst_node_id
                )
        return kept

    def _from_members(self, replies: Iterable[Message]) -> list[Message]:
        members = self.members()
        kept = []
        for reply in replies:
            self._attribute(reply)
            if members is None:
                kept.append(reply)
                continue
            name = members.get(int(reply.metadata.src_node_id))
            if name is None:
                log.warning(
                    "dropped a reply from node %s: not an active clinic in the register", reply.metadata.src_node_id
                )
                continue
            if not reply.has_error():
                relabel(reply.content, name)
            kept.append(reply)
        return kept


def relabel(content: RecordDict, name: str) -> None:
    """Put the register's clinic name wherever a reply names its clinic."""
    for record_name, key in NAME_KEYS:
        record = content.config_records.get(record_name)
        if record is not None:
            record[key] = name
    for record in content.config_records.values():
        if LEGACY_NAME_KEY in record:
            record[LEGACY_NAME_KEY] = name


def member_grid(grid: Grid) -> MemberGrid:
    """The Grid a ServerApp should use: limited to the register when the SuperLink says so."""
    from radfed.store import Store

    url = os.environ.get(REGISTER_ENV, "").strip()
    return MemberGrid(grid, Registry(Store(url)) if url else None)
