"""The model a clinic receives at the end of a run, on the wire and on its disk.

The coordinator sends it (server.delivery), the clinic keeps it (client_node.delivery)
and `client-node predict` uses it (radfed.prediction): one definition of the message's
record names and of the file, so the three cannot drift apart.

A delivered model file is a torch file holding a dict:
    state_dict: the model as this clinic evaluates it (its BatchNorm statistics under the
        run's bn_policy, its local layers under FedBN): the model whose validation figures
        the federation recorded for this clinic;
    global_digest: radfed.features.state_digest of the global model as the coordinator
        checkpointed it (the same for every clinic);
    spec: the experiment (JSON); normalisation: its input convention;
    kind / round: "final" or "selected", and the federation round it comes from;
    pooled: the federation's pooled figures for that round (AUROC, CI, threshold);
    clinic: this clinic's own figures for it (AUROC, CI, Youden threshold), computed here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

DELIVERY_KEY = "deliver"  # config flag of the query message that carries models
MODEL_RECORD = "model-{kind}"  # ArrayRecord name per model kind
RECEIPT_RECORD = "delivery"  # the clinic's ConfigRecord in its reply: kind -> digest stored
MODEL_KINDS = ("final", "selected")
MODELS_FOLDER = "models"  # under the node's home: models/run-<flwr run id>/<kind>.pt


class ModelFileError(Exception):
    """A delivered model file that is missing, unreadable or not one radfed wrote."""


def save_model_file(path: Path, state: dict[str, torch.Tensor], **meta: Any) -> str:
    """Write a delivered model (atomically) and return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": state, "format": "radfed-delivered-1", **meta}, tmp)
    tmp.replace(path)
    return sha256_file(path)


def load_model_file(path: Path) -> dict[str, Any]:
    """A delivered model file's dict; ModelFileError (one line) when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file {path} not found; pass a delivered model "
            f"(NODE_HOME/{MODELS_FOLDER}/run-ID/final.pt) or a run id"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or foreign file
        raise ModelFileError(
            f"model file {path} is not readable ({type(err).__name__}); use a model delivered by a radfed run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != "radfed-delivered-1":
        raise ModelFileError(
            f"model file {path} was not delivered by a radfed run (no model card in it); "
            "use NODE_HOME/models/run-ID/final.pt"
        )
    payload["spec_json"] = payload.get("spec", "{}")
    return payload


def sha256_file(path: Path) -> str:
    """Hex digest of a file, read in chunks (models and checkpoints are ~100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_card(folder: Path, card: dict[str, Any]) -> Path:
    """The delivered models' card (what, from which run, how good, with which threshold)."""
    path = folder / "model-card.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    return path
