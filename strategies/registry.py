"""Every strategy a spec can name, with its parameters and defaults.

Each is one of Flower's own strategy classes (or FedBN, strategies/fedbn.py) with
radfed's recording and update guards on top. `coordinator strategies` prints this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from strategies.fast_mean import FastMeanMixin
from strategies.fedbn import FedBN
from strategies.fedopt_stats import MeanStatisticsMixin
from strategies.guards import GuardMixin
from strategies.head_only import HeadOnlyMixin
from strategies.recording import RecordingMixin
from strategies.transfer import TransferMixin


@dataclass(frozen=True)
class StrategyInfo:
    """A strategy's Flower class, what it does, and its tunable parameters."""

    cls: type[Strategy]
    summary: str
    params: dict[str, tuple[Any, str]] = field(default_factory=dict)  # name -> (default, doc)


GUARD_PARAMS = {
    "norm_factor": (
        10.0,
        "exclude an update whose norm is over this many times the median of the other clinics' (3+ clinics)",
    )
}
_OPT = {
    "eta": (1e-2, "server learning rate"),
    "eta_l": (1e-2, "client learning rate hint"),
    "tau": (1e-3, "adaptivity"),
}
_STATS = " (BatchNorm statistics: mean)"
_BETAS = {"beta_1": (0.9, "momentum"), "beta_2": (0.99, "second-moment decay")}

REGISTRY: dict[str, StrategyInfo] = {
    "fedavg": StrategyInfo(FedAvg, "example-weighted mean of clinic models"),
    "fedprox": StrategyInfo(
        FedProx,
        "FedAvg; clinics add mu/2·||w − w_global||² to their loss",
        {"proximal_mu": (0.01, "weight of the proximal term")},
    ),
    "fedadam": StrategyInfo(FedAdam, f"server-side Adam on the averaged update{_STATS}", {**_OPT, **_BETAS}),
    "fedyogi": StrategyInfo(FedYogi, f"server-side Yogi on the averaged update{_STATS}", {**_OPT, **_BETAS}),
    "fedadagrad": StrategyInfo(FedAdagrad, f"server-side Adagrad on the averaged update{_STATS}", dict(_OPT)),
    "fedmedian": StrategyInfo(FedMedian, "coordinate-wise median (robust to outliers)"),
    "fedtrimmedavg": StrategyInfo(
        FedTrimmedAvg,
        "mean after trimming the extremes per coordinate",
        {"beta": (0.2, "fraction trimmed at each end")},
    ),
    "krum": StrategyInfo(
        Krum,
        "the update closest to its neighbours (Byzantine-robust)",
        {"num_malicious_nodes": (0, "clinics assumed faulty")},
    ),
    "multikrum": StrategyInfo(
        MultiKrum,
        "mean of the m Krum-best updates",
        {"num_malicious_nodes": (0, "clinics assumed faulty"), "num_nodes_to_select": (1, "m updates averaged")},
    ),
    "fedbn": StrategyInfo(FedBN, "FedAvg; BatchNorm weights and statistics stay at each clinic"),
}


class StrategyError(ValueError):
    """A strategy name or parameter that is not allowed; one line for the user."""


def check_strategy(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a spec's strategy and parameters; returns them with defaults filled in."""
    if name not in REGISTRY:
        raise StrategyError(f"key 'strategy' = {name!r} is not allowed; allowed: {', '.join(REGISTRY)}")
    allowed = {**REGISTRY[name].params, **GUARD_PARAMS}
    for key, value in params.items():
        if key not in allowed:
            raise StrategyError(
                f"strategy_params: {key!r} is not a parameter of {name}; allowed: {', '.join(allowed) or 'none'}"
            )
        default = allowed[key][0]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(default, int) and not isinstance(value, int))
            or value < 0
        ):
            kind = "a non-negative integer" if isinstance(default, int) else "a non-negative number"
            raise StrategyError(f"strategy_params: {key} = {value!r}; allowed: {kind} (default {default})")
    return {k: params.get(k, d) for k, (d, _) in allowed.items()}


WEIGHTED_MEAN = (FedAvg, FedProx)  # aggregation = weighted mean: radfed's primitive applies
SERVER_OPTIMISERS = (FedAdam, FedYogi, FedAdagrad)  # BatchNorm statistics averaged, not stepped


def strategy_class(name: str, recording: bool = True) -> type[Strategy]:
    """The Flower class with radfed's recording, half-precision transfer (off unless a
    transfer dtype is set), head-only transfer (off unless given a backbone) and guards
    (and fast mean) mixed in.

    `recording=False` where a wrapper records (and decodes) instead (strategies.privacy),
    so that it sees every reply even when it refuses to aggregate.
    """
    base = REGISTRY[name].cls
    mixins = (
        ((RecordingMixin, TransferMixin) if recording else ())
        + (HeadOnlyMixin, GuardMixin)
        + ((FastMeanMixin,) if base in WEIGHTED_MEAN else ())
        + ((MeanStatisticsMixin,) if base in SERVER_OPTIMISERS else ())
    )
    return type(f"Radfed{base.__name__}", (*mixins, base), {})


def describe() -> list[dict[str, Any]]:
    """The registry as data (for `coordinator strategies [--json]`)."""
    return [
        {
            "name": name,
            "flower_class": info.cls.__name__,
            "summary": info.summary,
            "params": {k: {"default": d, "doc": doc} for k, (d, doc) in {**info.params, **GUARD_PARAMS}.items()},
        }
        for name, info in REGISTRY.items()
    ]
