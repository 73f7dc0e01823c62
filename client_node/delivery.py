"""Keeping the models a run delivers to this clinic (see server.delivery).

The clinic stores, per model kind ("final", and "selected" where the run chose another
round), the model *as this clinic evaluates it*: the global weights with its own
BatchNorm statistics (bn_policy "clinic") or its own layers (FedBN), the very model whose
validation figures the federation recorded for it. With it go the experiment, the
input convention, the federation's pooled figures and threshold, and this clinic's own
figures and threshold, computed here on its validation patients. Nothing of it is sent:
the reply carries the digest of the global weights received, for the audit trail.

Files: NODE_HOME/models/run-<flwr run id>/{final,selected}.pt and model-card.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from flwr.app import Message

from radfed.data import ClinicData
from radfed.delivery import MODEL_KINDS, MODEL_RECORD, save_model_file, write_card
from radfed.features import state_digest
from radfed.spec import ExperimentSpec
from radfed.training import predict_logits
from radfed.unit_scores import split_validation

log = logging.getLogger("radfed.clinic")

# global state_dict -> the model as this clinic evaluates it (client_node.app knows how)
AsClinicModel = Callable[[dict[str, torch.Tensor]], torch.nn.Module]


def own_figures(model: torch.nn.Module, data: ClinicData, spec: ExperimentSpec) -> dict[str, Any]:
    """This clinic's figures for a model on its validation patients (as the federation's rows)."""
    quality = split_validation(predict_logits(model, data.val.pixels).numpy(), data.val, spec.seed).quality
    return {
        key: value
        for key, value in quality.as_dict().items()
        if key
        in (
            "auroc",
            "auroc_low",
            "auroc_high",
            "threshold",
            "threshold_logit",
            "sensitivity",
            "specificity",
            "images",
            "patients",
        )
    }


def keep_delivery(
    msg: Message, spec: ExperimentSpec, data: ClinicData, models_dir: Path, as_clinic_model: AsClinicModel
) -> dict[str, str]:
    """Store every delivered model of the message; returns kind -> digest of the global weights."""
    config = msg.content["config"]
    card = json.loads(str(config["card"]))
    normalisation = str(config.get("normalisation", "radimagenet"))
    folder = models_dir / f"run-{card['flwr_run_id']}"
    receipt: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    own: dict[str, dict[str, Any]] = {}
    for kind in MODEL_KINDS:
        record = msg.content.array_records.get(MODEL_RECORD.format(kind=kind))
        if record is None:
            continue
        state = record.to_torch_state_dict()
        receipt[kind] = state_digest(state, arch=spec.backbone, normalisation=normalisation)
        model = as_clinic_model(state)
        own[kind] = own_figures(model, data, spec)
        path = folder / f"{kind}.pt"
        sha = save_model_file(
            path,
            {k: v.detach().cpu() for k, v in model.state_dict().items()},
            spec=spec.to_json(),
            normalisation=normalisation,
            kind=kind,
            round=int(card["rounds"][kind]),
            pooled=card["pooled"][kind],
            clinic=own[kind],
            global_digest=receipt[kind],
            experiment=spec.name,
            flwr_run_id=str(card["flwr_run_id"]),
        )
        files[kind] = {"file": path.name, "sha256": sha}
        log.info(
            "received the %s model of run %s (round %s): %s", kind, card["flwr_run_id"], card["rounds"][kind], path
        )
    write_card(
        folder,
        {
            "experiment": spec.name,
            "flwr_run_id": card["flwr_run_id"],
            "labels": list(spec.labels),
            "backbone": spec.backbone,
            "weights": spec.weight_source or spec.weights,
            "image_size": spec.image_size,
            "normalisation": normalisation,
            "bn_policy": spec.bn_policy,
            "rounds": card["rounds"],
            "federation_pooled": card["pooled"],
            "this_clinic": own,
            "files": files,
            "global_digest": receipt,
            "intended_use": "research use only; not a medical device",
        },
    )
    return receipt
