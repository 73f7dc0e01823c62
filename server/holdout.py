"""Leave-one-clinic-out: train without one clinic, then evaluate the final model there.

A Flower node id says nothing about which clinic it is, so the ServerApp asks every
node once (a "query" message; the ClientApp answers with its clinic name only). The
strategy then sees a Grid without the held-out node, so no Flower strategy needs to
know about hold-outs. The held-out clinic evaluates the final global model: its
evaluate message rides along with the strategy's evaluate broadcast after the last
round (the only one radfed's strategies send), so it costs no extra round trip; if a
strategy sent none, the ServerApp sends it one afterwards. Its sensitivity and
specificity are then taken at the federation's pooled validation threshold, from
its score histogram (server.recorder).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.grid_wrapper import WrappedGrid
from strategies.utils import ClinicReply, parse_reply


class HoldoutMissing(RuntimeError):
    """The clinic named by --holdout did not connect within the clinic timeout."""


class ExcludingGrid(WrappedGrid):
    """The run's Grid without some nodes: strategies sample, send and wait only for the rest."""

    def __init__(self, grid: Grid, excluded: set[int]) -> None:
        super().__init__(grid)
        self._excluded = set(excluded)
        self.held_out_replies: list[Message] = []  # the latest evaluate replies of excluded nodes

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self._grid.get_node_ids() if n not in self._excluded]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Evaluate broadcasts also go to the excluded nodes; their replies are kept aside."""
        messages = list(messages)
        riders = []
        if messages and all(m.metadata.message_type == "evaluate" for m in messages):
            riders = [
                Message(content=messages[0].content, message_type="evaluate", dst_node_id=node)
                for node in sorted(self._excluded)
            ]
        replies = list(self._grid.send_and_receive(messages + riders, timeout=timeout))
        if riders:
            self.held_out_replies = [r for r in replies if r.metadata.src_node_id in self._excluded]
        return [r for r in replies if r.metadata.src_node_id not in self._excluded]


def ask_names(grid: Grid, node_ids: Iterable[int], timeout: float) -> dict[int, str]:
    """Clinic name of each node that answers within `timeout` seconds."""
    messages = [
        Message(content=RecordDict({"config": ConfigRecord({})}), message_type="query", dst_node_id=node)
        for node in node_ids
    ]
    if not messages:
        return {}
    replies = [parse_reply(m) for m in grid.send_and_receive(messages, timeout=timeout)]
    return {int(r.node_id): r.clinic for r in replies if not r.error}


def find_holdout(grid: Grid, name: str, min_clinics: int, timeout: float) -> int:
    """Node id of clinic `name`, once it and `min_clinics` other clinics are connected.

    Raises HoldoutMissing with one line (the clinics that did connect, and the fix).
    """
    deadline = time.monotonic() + timeout
    names: dict[int, str] = {}
    while True:
        nodes = list(grid.get_node_ids())
        unknown = [n for n in nodes if n not in names]
        if unknown:  # a ClientApp process per answer: allow a busy clinic a minute
            names.update(ask_names(grid, unknown, timeout=max(60.0, deadline - time.monotonic())))
        found = [n for n in nodes if names.get(n) == name]
        if found and len(nodes) - 1 >= min_clinics:
            return found[0]
        if time.monotonic() > deadline:
            seen = ", ".join(sorted(set(names.values()))) or "none answered"
            problem = (
                f"holdout clinic {name!r} is not connected (connected clinics: {seen})"
                if not found
                else f"only {len(nodes) - 1} clinics besides holdout {name!r} connected, min_clinics is {min_clinics}"
            )
            raise HoldoutMissing(f"{problem}; start `client-node start --name {name}` or fix --holdout")
        time.sleep(1)


def evaluate_holdout(
    grid: Grid, node_id: int, arrays: ArrayRecord, config: ConfigRecord, timeout: float
) -> ClinicReply:
    """The held-out clinic's evaluation of the final model: the reply that rode along with
    the final evaluate broadcast, or one sent now."""
    if isinstance(grid, ExcludingGrid):
        ridden = [m for m in grid.held_out_replies if m.metadata.src_node_id == node_id]
        if ridden:
            return parse_reply(ridden[0])
        grid = grid._grid
    message = Message(
        content=RecordDict({"arrays": arrays, "config": config}), message_type="evaluate", dst_node_id=node_id
    )
    replies = [parse_reply(m) for m in grid.send_and_receive([message], timeout=timeout)]
    if not replies:
        return ClinicReply(str(node_id), f"node-{node_id}", None, {}, "no reply before the round timeout")
    return replies[0]
