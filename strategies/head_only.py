"""Head-only rounds (freeze = "all"): only trainable tensors travel after the first message.

The global model the strategy holds and aggregates is the head alone; the frozen
backbone goes to each clinic once per run, as a second ArrayRecord ("backbone") in the
first message that clinic receives, and the clinic keeps it on its disk by digest
(radfed/features.py). Replies carry the head alone, so guards, FedBN and every Flower
strategy simply work on the keys that travel. The ServerApp merges the head back into
the backbone for every checkpoint (server/recorder.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

BACKBONE_KEY = "backbone"


class HeadOnlyMixin:
    """Put after RecordingMixin (so recorded bytes include the backbone) and before the
    guards. `backbone` is the frozen part of the model; None turns the mixin off."""

    backbone: ArrayRecord | None = None

    def _with_backbone(self, messages: Iterable[Message]) -> list[Message]:
        """Attach the backbone to messages for clinics that have not yet confirmed it."""
        have = getattr(self, "_have_backbone", set())
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if self.backbone is not None and node not in have:
                content = RecordDict({**dict(msg.content.items()), BACKBONE_KEY: self.backbone})
                msg = Message(content=content, message_type=msg.metadata.message_type, dst_node_id=node)
            out.append(msg)
        return out

    def _confirmed(self, replies: list[Message]) -> None:
        """A clinic that replied without error has the backbone on its disk."""
        have = self.__dict__.setdefault("_have_backbone", set())
        have.update(m.metadata.src_node_id for m in replies if not m.has_error())

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._with_backbone(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self._with_backbone(super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self._confirmed(replies)
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        self._confirmed(replies)
        return super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
