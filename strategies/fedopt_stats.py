"""BatchNorm statistics under server-side optimisers (FedAdam, FedYogi, FedAdagrad).

Flower's FedOpt strategies apply their adaptive step to every array of the model. For
BatchNorm running means and variances that step is wrong: Adam's first step moves every
entry by about the server learning rate, whatever the clinics measured, so the global
model keeps near-initial statistics while its weights move on, and a freshly trained
ResNet evaluates worse than the model it started from. Running statistics (and batch
counters) are measurements, not parameters: here they get the clinics' example-weighted
mean, in their own dtype, and only parameters take the optimiser's step.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from strategies.utils import weighted_mean


class MeanStatisticsMixin:
    """Put directly before a FedOpt strategy class; set `statistics_keys` (the model's
    BatchNorm buffers, radfed.batchnorm.batchnorm_statistics_keys)."""

    statistics_keys: list[str] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        keys = [k for k in self.statistics_keys if arrays is not None and k in arrays]
        if not keys:
            return arrays, metrics
        valid = [m.content for m in replies if not m.has_error() and m.content.array_records]
        mean = weighted_mean(valid, self.weighted_by_key, keys)  # type: ignore[attr-defined]
        current = self.current_arrays or {}  # type: ignore[attr-defined]
        for key in keys:
            dtype = current[key].dtype if key in current else arrays[key].numpy().dtype
            arrays[key] = Array(
                np.asarray(np.rint(mean[key].numpy()) if dtype.kind in "iu" else mean[key].numpy()).astype(dtype)
            )
        return arrays, metrics
