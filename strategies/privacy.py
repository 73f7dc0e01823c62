"""Differential privacy for any radfed strategy: Flower's clipping wrappers, selectable per run.

An experiment's `[experiment.privacy]` table picks one of Flower's four central-DP
wrappers (server- or client-side clipping, fixed or adaptive) and its parameters; the
wrapper goes around the spec's strategy, so guards and aggregation run inside it on
clipped updates and Gaussian noise lands on the aggregate. Client-side modes need
Flower's `fixedclipping_mod` / `adaptiveclipping_mod` at the clinics; radfed's ClientApp
applies them to training only, and only when the server sends a clipping norm.

Only the trainable, federated parameters are clipped, noised and averaged. Everything
else stays out of the mechanism: the clinics keep their BatchNorm running statistics
(and any other buffer) on their own disk, as FedBN does, and send the received values
back unchanged; frozen layers (and FedBN's BatchNorm layers) keep the global values.
Why: a step counter changing by hundreds would dominate the clipping norm, noise makes
running variances negative (NaN at evaluation), and averaging statistics without noise
would release data summaries outside the guarantee.

Noise is calibrated as Flower does, std = noise_multiplier x clipping_norm /
num_sampled_clients (default: the experiment's min_clinics, the conservative choice
when more clinics join). The mean stays example-weighted; with clinics of very
different sizes the calibration is looser than for the uniform mean Flower assumes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from strategies.recording import NoClinicResult, RecordingMixin
from strategies.registry import StrategyError
from strategies.transfer import TransferMixin

CLIPPING_MODE_KEY = "dp-clipping"  # train config: "fixed" or "adaptive" (client-side modes)
LOCAL_STATE_KEY = "local-stats"  # train/evaluate config: clinics keep their buffers

_NOISE = {
    "noise_multiplier": (
        1.0,
        "Gaussian noise std as a multiple of the clipping norm (per sampled clinic); 1.0 or more for strong privacy",
    )
}
_SAMPLED = {"num_sampled_clients": (0, "clinics per round the noise is calibrated for (0: min_clinics)")}
_FIXED = {**_NOISE, "clipping_norm": (1.0, "L2 bound on each clinic's update"), **_SAMPLED}
_ADAPTIVE = {
    **_NOISE,
    **_SAMPLED,
    "initial_clipping_norm": (0.1, "starting L2 bound, adapted every round"),
    "target_clipped_quantile": (0.5, "fraction of updates meant to be clipped"),
    "clip_norm_lr": (0.2, "learning rate of the bound's geometric update"),
    "clipped_count_stddev": (0.0, "noise on the clipped count (0: Flower's default, num_sampled_clients/20)"),
}

_SECAGG = {
    "num_shares": (3, "clinics each clinic's secrets are shared with (3 or more)"),
    "reconstruction_threshold": (2, "shares needed to reconstruct a dropped clinic's mask"),
    "max_weight": (1000.0, "largest num-examples a clinic may have (quantised weight)"),
    "clipping_range": (8.0, "weights are clipped to ±this before quantisation"),
    "quantization_range": (4194304, "quantisation levels over the clipping range"),
}

# mode -> (Flower wrapper or workflow, where clipping happens, what it does, parameters)
MODES: dict[str, tuple[type[Strategy] | str | None, str, str, dict[str, tuple[Any, str]]]] = {
    "none": (None, "", "no differential privacy", {}),
    "server-fixed": (
        DifferentialPrivacyServerSideFixedClipping,
        "server",
        "server clips each update to clipping_norm, adds noise to the mean",
        _FIXED,
    ),
    "client-fixed": (
        DifferentialPrivacyClientSideFixedClipping,
        "client",
        "clinics clip (fixedclipping_mod), server adds noise to the mean",
        _FIXED,
    ),
    "server-adaptive": (
        DifferentialPrivacyServerSideAdaptiveClipping,
        "server",
        "server clips with a bound adapted to a target quantile, adds noise",
        _ADAPTIVE,
    ),
    "client-adaptive": (
        DifferentialPrivacyClientSideAdaptiveClipping,
        "client",
        "clinics clip (adaptiveclipping_mod) with an adapted bound, server adds noise",
        _ADAPTIVE,
    ),
    "secagg+": (
        "SecAggPlusWorkflow",
        "",
        "secure aggregation: the server sees only the masked "
        "sum of the clinics' updates (FedAvg only, 3+ clinics, no guards)",
        _SECAGG,
    ),
}


def check_privacy(table: dict[str, Any], min_clinics: int, strategy: str = "fedavg") -> dict[str, Any]:
    """Validate a spec's privacy table; returns it resolved (mode, every parameter).

    The resolved table is what the run records, so a reader sees the values used.
    """
    mode = table.get("mode", "none")
    if mode not in MODES:
        raise StrategyError(f"privacy: mode = {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    cls, _, _, allowed = MODES[mode]
    for key, value in table.items():
        if key == "mode":
            continue
        if key not in allowed:
            raise StrategyError(
                f"privacy: {key!r} is not a parameter of mode {mode}; allowed: {', '.join(allowed) or 'none'}"
            )
        default = allowed[key][0]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(default, int) and not isinstance(value, int))
            or value < 0
        ):
            kind = "a non-negative integer" if isinstance(default, int) else "a non-negative number"
            raise StrategyError(f"privacy: {key} = {value!r}; allowed: {kind} (default {default})")
    resolved: dict[str, Any] = {"mode": mode, **{k: table.get(k, d) for k, (d, _) in allowed.items()}}
    if mode == "secagg+":
        _check_secagg(resolved, min_clinics, strategy)
    elif cls is not None:
        resolved["num_sampled_clients"] = resolved["num_sampled_clients"] or min_clinics
        try:
            _wrap(cls, FedAvg(), resolved)
        except ValueError as err:  # Flower's own checks, e.g. a zero clipping norm
            raise StrategyError(f"privacy ({mode}): {str(err).splitlines()[0]}") from None
    return resolved


def _check_secagg(resolved: dict[str, Any], min_clinics: int, strategy: str) -> None:
    if strategy != "fedavg":
        raise StrategyError(
            f"privacy: mode secagg+ works with strategy fedavg only, not {strategy}; "
            'set strategy = "fedavg" or pick a differential-privacy mode'
        )
    shares, threshold = resolved["num_shares"], resolved["reconstruction_threshold"]
    if min_clinics < 3 or shares < 3:
        raise StrategyError(
            f"privacy: mode secagg+ needs min_clinics >= 3 and num_shares >= 3 (got {min_clinics} and {shares})"
        )
    if not 1 <= threshold <= shares or resolved["clipping_range"] <= 0 or resolved["max_weight"] <= 0:
        raise StrategyError(
            f"privacy: secagg+ needs 1 <= reconstruction_threshold <= num_shares "
            f"(got {threshold} and {shares}) and positive clipping_range, max_weight"
        )


def _wrap(cls: type[Strategy], inner: Strategy, resolved: dict[str, Any]) -> Strategy:
    params = {k: v for k, v in resolved.items() if k != "mode"}
    if "clipped_count_stddev" in params:
        params["clipped_count_stddev"] = params["clipped_count_stddev"] or None
    return cls(inner, **params)


class PrivateParametersMixin:
    """Put before a Flower DP wrapper: only `shared_keys` may change in the global model."""

    shared_keys: set[str]
    clipping: str = ""  # "fixed"/"adaptive" when clinics clip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._before = arrays
        config[LOCAL_STATE_KEY] = True
        if self.clipping:
            config[CLIPPING_MODE_KEY] = self.clipping
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config[LOCAL_STATE_KEY] = True
        return super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        failed = [m for m in replies if m.has_error()]
        if failed:  # Flower's wrappers refuse the round; say why instead of "no result"
            raise NoClinicResult(
                f"round {server_round}: {len(failed)} clinic(s) failed ({failed[0].error.reason}); "
                "with differential privacy a round is aggregated only when every clinic replies"
            )
        for msg in replies:  # clipping must see only what may change, whatever a clinic sent
            for record in msg.content.array_records.values():
                for key in set(record.keys()) - self.shared_keys:
                    if key in self._before:
                        record[key] = self._before[key]
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        if arrays is not None:
            for key in set(arrays.keys()) - self.shared_keys:
                arrays[key] = self._before[key]  # noise and averages kept off these
        return arrays, metrics


def wrap_private(inner: Strategy, resolved: dict[str, Any], shared_keys: set[str]) -> Strategy:
    """The spec's strategy inside Flower's DP wrapper, with radfed's recording outside and
    half-precision replies decoded to float32 before clipping and noise (strategies.transfer)."""
    cls, where, _, _ = MODES[resolved["mode"]]
    assert cls is not None
    wrapper_cls = type(f"Radfed{cls.__name__}", (RecordingMixin, TransferMixin, PrivateParametersMixin, cls), {})
    strategy = _wrap(wrapper_cls, inner, resolved)
    strategy.shared_keys = set(shared_keys)
    strategy.clipping = resolved["mode"].split("-")[1] if where == "client" else ""
    return strategy


def describe_privacy() -> list[dict[str, Any]]:
    """The modes as data (for `coordinator strategies [--json]`)."""
    return [
        {
            "mode": mode,
            "flower_class": getattr(cls, "__name__", cls),
            "summary": summary,
            "params": {k: {"default": d, "doc": doc} for k, (d, doc) in params.items()},
        }
        for mode, (cls, _, summary, params) in MODES.items()
    ]
