"""Secure aggregation (SecAgg+, Bell et al. 2020) with Flower's own workflow.

Flower 1.42 has SecAgg+ only on its legacy path: `SecAggPlusWorkflow` driven by
`DefaultWorkflow` with a legacy `flwr.server.strategy.FedAvg`, and `secaggplus_mod` at
the clinics. Both run inside radfed's new-style ServerApp and ClientApp: the ServerApp
hands its Grid to the workflow, and the ClientApp translates the legacy FitIns/FitRes
messages to and from its own handlers (client_node.app.legacy_format_mod). The server
only ever sees the masked sum of the clinics' updates, so the update guards, robust
strategies and differential-privacy wrappers do not apply: the mode is FedAvg only.
Clinics keep their buffers (BatchNorm statistics) local as under DP: they could not
survive SecAgg+'s quantisation (values are clipped to ±clipping_range).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.serverapp import Grid

from strategies.recording import NoClinicResult, RoundRecorder
from strategies.utils import NUM_EXAMPLES, ClinicReply, finite_weighted_mean

log = logging.getLogger("radfed.server")
SECAGG_MODE = "secagg+"
KEYS_CONFIG = "state-keys"  # fit/evaluate config: the state_dict keys (client_node.legacy)


def _legacy_fedavg():
    from flwr.server.strategy import FedAvg  # deprecated path, imported only where used

    return FedAvg


def _reply(proxy: Any, res: Any) -> ClinicReply:
    metrics = dict(res.metrics)
    name = str(metrics.pop("clinic-name", f"node-{proxy.node_id}"))
    device = metrics.pop("clinic-device", None)
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    numbers["num-examples"] = float(res.num_examples)
    return ClinicReply(str(proxy.node_id), name, device, numbers)


def _mean(replies: list[ClinicReply]) -> MetricRecord:
    """Example-weighted mean of the clinics' metrics (what the other strategies record)."""
    return finite_weighted_mean([RecordDict({"m": MetricRecord(r.metrics)}) for r in replies], NUM_EXAMPLES)


def secure_strategy(
    recorder: RoundRecorder,
    keys: list[str],
    initial: ArrayRecord,
    shared_keys: set[str],
    rounds: int,
    min_clinics: int,
    config: dict[str, Any],
):
    """A legacy FedAvg that records every clinic and keeps non-shared entries fixed."""
    base = _legacy_fedavg()

    class SecureFedAvg(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(
                fraction_fit=1.0,
                fraction_evaluate=1.0,
                min_fit_clients=min_clinics,
                min_evaluate_clients=min_clinics,
                min_available_clients=min_clinics,
                initial_parameters=ndarrays_to_parameters([initial[k].numpy() for k in keys]),
                on_fit_config_fn=self._fit_config,
                on_evaluate_config_fn=self._evaluate_config,
                evaluate_fn=self._checkpoint,
                accept_failures=False,
            )
            self._previous = [initial[k].numpy() for k in keys]

        def _fit_config(self, server_round: int) -> dict[str, Any]:
            return {
                **config,
                "server-round": server_round,
                "evaluate-received": True,
                "local-stats": True,
                KEYS_CONFIG: json.dumps(keys),
            }

        def _evaluate_config(self, server_round: int) -> dict[str, Any]:
            return {**config, "server-round": server_round, "local-stats": True, KEYS_CONFIG: json.dumps(keys)}

        def configure_evaluate(self, server_round, parameters, client_manager):
            if server_round != rounds:  # evaluated on receipt during the next round
                return []
            return super().configure_evaluate(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            replies = [_reply(proxy, res) for proxy, res in results]
            recorder.clinic_replies(server_round, "train", replies)
            if failures or not results:
                raise NoClinicResult(
                    f"round {server_round}: {len(failures)} clinic(s) failed; "
                    "secure aggregation needs every sampled clinic"
                )
            parameters, _ = super().aggregate_fit(server_round, results, failures)
            recorder.round_metrics(server_round, "train", _mean(replies), replies)
            arrays = parameters_to_ndarrays(parameters)
            for i, key in enumerate(keys):  # quantisation noise kept off fixed entries
                if key not in shared_keys:
                    arrays[i] = self._previous[i]
                elif arrays[i].dtype != self._previous[i].dtype:
                    arrays[i] = arrays[i].astype(self._previous[i].dtype)
            self._previous = arrays
            return ndarrays_to_parameters(arrays), dict(_mean(replies))

        def aggregate_evaluate(self, server_round, results, failures):
            replies = [_reply(proxy, res) for proxy, res in results]
            recorder.clinic_replies(server_round, "evaluate", replies)
            recorder.round_metrics(server_round, "evaluate", _mean(replies), replies)
            if not results:
                raise NoClinicResult(f"round {server_round}: no clinic returned an evaluation result")
            return None, dict(_mean(replies))

        def _checkpoint(self, server_round: int, ndarrays, _config):
            recorder.checkpoint(server_round, ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(keys, ndarrays)}))
            return None

    return SecureFedAvg()


def run_secure(
    grid: Grid, context: Context, strategy: Any, resolved: dict[str, Any], rounds: int, round_timeout: float
) -> None:
    """Flower's DefaultWorkflow with SecAgg+ as the fit workflow."""
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout), strategy=strategy
    )
    fit = SecAggPlusWorkflow(
        num_shares=resolved["num_shares"],
        reconstruction_threshold=resolved["reconstruction_threshold"],
        max_weight=resolved["max_weight"],
        clipping_range=resolved["clipping_range"],
        quantization_range=resolved["quantization_range"],
        timeout=round_timeout,
    )
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
