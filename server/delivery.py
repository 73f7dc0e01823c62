"""At the end of a run, every clinic receives the model back through the federation.

Clinics join to get a better model for their own patients; a checkpoint on the
coordinator's disk is not that. After the final evaluation the ServerApp sends each
connected clinic (the held-out one included) one "query" message holding the final
model and, where the run selected another round, the selected one, with what a clinic
needs to use them: the experiment's spec and input convention, the rounds, the pooled
AUROC with its CI and the federation's pooled operating threshold for each. The ClientApp
keeps them under its node home (client_node.delivery) and answers with the digest of
what it stored; the audit trail records who holds which model.

Parameters of `deliver`:
    grid: the run's (member) Grid: every connected clinic gets the model.
    store / run_id / flwr_run_id: where the run's checkpoints and selection are recorded.
    spec / normalisation: the experiment and its input convention.
    pooled: the recorder's pooled figures per round (AUROC, CI, threshold_logit).
    shared: the run's shared config (head-only, backbone digest...), passed along.
    audit: the register's audit trail (None: no node authentication).
    timeout: seconds to wait for the clinics' acknowledgements.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from radfed.audit import Registry
from radfed.delivery import DELIVERY_KEY, MODEL_RECORD
from radfed.features import state_digest
from radfed.spec import ExperimentSpec
from radfed.store import Store
from server.resume import load_checkpoint
from strategies.utils import parse_reply

log = logging.getLogger("radfed.server")


def delivery_models(store: Store, run_id: int) -> dict[str, int]:
    """{"final": last checkpointed round, "selected": selected round (if another one)}."""
    rounds = [c["round"] for c in store.checkpoints_of(run_id)]
    if not rounds:
        return {}
    final = max(rounds)
    chosen = store.selected_round(run_id)
    models = {"final": final}
    if chosen and chosen != final and chosen in rounds:
        models["selected"] = chosen
    return models


def _figures(pooled: dict[int, dict[str, Any]], server_round: int) -> dict[str, Any]:
    figures = pooled.get(server_round, {})
    return {
        key: figures.get(key)
        for key in (
            "auroc",
            "auroc_ci_low",
            "auroc_ci_high",
            "threshold",
            "threshold_logit",
            "sensitivity",
            "specificity",
        )
    }


def deliver(
    grid: Grid,
    store: Store,
    run_id: int,
    flwr_run_id: str,
    spec: ExperimentSpec,
    normalisation: str,
    pooled: dict[int, dict[str, Any]],
    shared: dict[str, Any],
    audit: Registry | None = None,
    timeout: float = 300.0,
) -> dict[str, str]:
    """Send the run's final (and selected) model to every connected clinic; returns
    clinic -> "ok" or the reason it does not hold them. Never raises for a clinic's sake:
    a run whose training completed stays completed."""
    models = delivery_models(store, run_id)
    nodes = list(grid.get_node_ids())
    if not models or not nodes:
        return {}
    by_round = {c["round"]: c for c in store.checkpoints_of(run_id)}
    content = RecordDict()
    digests: dict[str, str] = {}
    for kind, server_round in models.items():
        ckpt = by_round[server_round]
        state = load_checkpoint(ckpt["path"], ckpt["sha256"])
        digests[kind] = state_digest(state, arch=spec.backbone, normalisation=normalisation)
        content[MODEL_RECORD.format(kind=kind)] = ArrayRecord(state)
    card = {
        "experiment": spec.name,
        "flwr_run_id": str(flwr_run_id),
        "run_id": run_id,
        "rounds": {kind: r for kind, r in models.items()},
        "pooled": {kind: _figures(pooled, r) for kind, r in models.items()},
        "digests": digests,
        "checkpoint_sha256": {kind: by_round[r]["sha256"] for kind, r in models.items()},
    }
    config = {
        **shared,
        DELIVERY_KEY: True,
        "spec": spec.to_json(),
        "normalisation": normalisation,
        "card": json.dumps(card, sort_keys=True),
    }
    content["config"] = ConfigRecord(config)
    messages = [Message(content=content, message_type="query", dst_node_id=node) for node in nodes]
    outcome: dict[str, str] = {}
    for reply in (parse_reply(m) for m in grid.send_and_receive(messages, timeout=timeout)):
        receipt = reply.receipt or {}
        if reply.error:
            outcome[reply.clinic] = f"not delivered: {reply.error}"
        elif any(receipt.get(kind) != digest for kind, digest in digests.items()):
            outcome[reply.clinic] = "not delivered: the digest it stored differs from the coordinator's"
        else:
            outcome[reply.clinic] = "ok"
        detail = ", ".join(f"{kind} round {models[kind]} ({digests[kind][:12]})" for kind in models)
        log.info("delivery to %s: %s (%s)", reply.clinic, outcome[reply.clinic], detail)
        if audit is not None:
            audit.event(
                "delivered" if outcome[reply.clinic] == "ok" else "failed",
                clinic=reply.clinic,
                node_id=reply.node_id,
                flwr_run_id=str(flwr_run_id),
                detail=detail if outcome[reply.clinic] == "ok" else outcome[reply.clinic][:200],
            )
    return outcome
