"""Aggregation strategies a coordinator can name in an experiment spec.

`build_strategy` turns a spec into one of Flower's strategies with radfed's recording
(strategies/recording.py) and update guards (strategies/guards.py) on top, inside one of
Flower's differential-privacy wrappers when the spec asks for it (strategies/privacy.py);
the names, parameters and defaults live in strategies/registry.py.
"""

from __future__ import annotations

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy

from radfed.spec import ExperimentSpec
from strategies.privacy import check_privacy, describe_privacy, wrap_private
from strategies.recording import NoClinicResult, RoundRecorder
from strategies.registry import REGISTRY, StrategyError, check_strategy, describe, strategy_class
from strategies.utils import NUM_EXAMPLES, finite_weighted_mean


def build_strategy(
    spec: ExperimentSpec,
    recorder: RoundRecorder,
    bn_keys: list[str] | None = None,
    backbone: ArrayRecord | None = None,
    trainable_keys: set[str] | None = None,
    statistics_keys: list[str] | None = None,
) -> Strategy:
    """The spec's strategy, waiting for `min_clinics` and recording to `recorder`.

    With `backbone` (head-only rounds) the global model the strategy holds is the head
    alone and the backbone goes once to each clinic (strategies/head_only.py).
    `trainable_keys` (the model's parameters left trainable by the spec's freeze
    policy) are the only ones differential privacy lets change; needed when the spec
    has a privacy mode. `statistics_keys` (the model's BatchNorm buffers) are averaged,
    never stepped, by the server optimisers (strategies/fedopt_stats.py), and travel
    float32 under a half-precision `transfer_dtype` (strategies/transfer.py).
    """
    params = check_strategy(spec.strategy, spec.strategy_params)
    privacy = check_privacy(spec.privacy, spec.min_clinics, spec.strategy)
    private = privacy["mode"] not in ("none", "secagg+")  # secagg+: strategies.secagg
    norm_factor = float(params.pop("norm_factor"))
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
    if spec.strategy == "fedbn":
        params["bn_keys"] = list(bn_keys or [])
    strategy = strategy_class(spec.strategy, recording=not private)(**common, **params)
    strategy.recorder = recorder
    strategy.backbone = backbone
    strategy.statistics_keys = list(statistics_keys or [])
    strategy.final_round = spec.rounds
    strategy.patience = spec.patience
    strategy.norm_factor = norm_factor
    strategy.min_accept = spec.min_accept or spec.min_clinics
    strategy.transfer_dtype = spec.transfer_dtype
    strategy.transfer_keep = set(statistics_keys or [])
    if not private:
        return strategy
    if trainable_keys is None:
        raise ValueError("build_strategy: a privacy mode needs the model's trainable_keys")
    shared = set(trainable_keys) - set(params.get("bn_keys", ()))
    wrapper = wrap_private(strategy, privacy, shared)
    wrapper.recorder = recorder
    wrapper.final_round = spec.rounds
    wrapper.patience = spec.patience
    wrapper.transfer_dtype = spec.transfer_dtype
    wrapper.transfer_keep = set(statistics_keys or [])
    return wrapper


__all__ = [
    "REGISTRY",
    "NoClinicResult",
    "StrategyError",
    "build_strategy",
    "check_privacy",
    "check_strategy",
    "describe",
    "describe_privacy",
]
