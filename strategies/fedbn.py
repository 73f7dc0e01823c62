"""FedBN (Li et al., ICLR 2021): BatchNorm stays local to each clinic.

Scanners and populations differ between clinics, and BatchNorm statistics carry that
difference. FedBN averages everything except BatchNorm weights, biases and running
statistics; each clinic keeps its own on its disk between rounds (the ClientApp
restores them onto every global model it receives, for training and evaluation).

Parameters
----------
bn_keys : list[str]
    state_dict keys of the model's BatchNorm layers (radfed.batchnorm).
(all other parameters as Flower's FedAvg)
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.fast_mean import FastMeanMixin


class FedBN(FastMeanMixin, FedAvg):
    """FedAvg over non-BatchNorm tensors; the global BatchNorm entries never change."""

    def __init__(self, *, bn_keys: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.bn_keys = set(bn_keys)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._previous = arrays
        config["local-bn"] = True
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["local-bn"] = True
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            for key in self.bn_keys & set(arrays.keys()):
                arrays[key] = self._previous[key]
        return arrays, metrics
