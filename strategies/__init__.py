"""Aggregation strategies a coordinator can name in an experiment spec.

Each entry is one of Flower's own strategy classes with radfed's recording layer on
top; `build_strategy` turns a spec into a ready strategy.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy

from radfed.spec import ExperimentSpec
from strategies.recording import NoClinicResult, RecordingMixin, RoundRecorder
from strategies.utils import NUM_EXAMPLES, finite_weighted_mean


class RecordingFedAvg(RecordingMixin, FedAvg):
    """FedAvg (example-weighted mean of clinic models), recorded."""


class RecordingFedProx(RecordingMixin, FedProx):
    """FedProx: FedAvg whose clinics add mu/2·||w − w_global||² (mu: `proximal_mu`)."""


class RecordingFedAdam(RecordingMixin, FedAdam):
    """FedAdam: the server applies Adam to the averaged clinic update."""


STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": RecordingFedAvg,
    "fedprox": RecordingFedProx,
    "fedadam": RecordingFedAdam,
}


def build_strategy(spec: ExperimentSpec, recorder: RoundRecorder) -> Strategy:
    """The spec's strategy, waiting for `min_clinics` and recording to `recorder`."""
    common = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=spec.min_clinics,
        min_evaluate_nodes=spec.min_clinics,
        min_available_nodes=spec.min_clinics,
        weighted_by_key=NUM_EXAMPLES,
        train_metrics_aggr_fn=finite_weighted_mean,
        evaluate_metrics_aggr_fn=finite_weighted_mean,
    )
    if spec.strategy == "fedprox":
        common["proximal_mu"] = spec.proximal_mu
    strategy = STRATEGIES[spec.strategy](**common)
    strategy.recorder = recorder
    strategy.final_round = spec.rounds
    return strategy


__all__ = ["STRATEGIES", "NoClinicResult", "build_strategy"]
