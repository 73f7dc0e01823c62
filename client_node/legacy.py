"""Flower's secure-aggregation messages, in and out of radfed's own ClientApp handlers.

Flower 1.42 runs SecAgg+ only on its legacy path (strategies/secagg.py): the server sends
legacy FitIns/EvaluateIns records (keyless parameter lists) and `secaggplus_mod` expects
a FitRes back. `legacy_format_mod` turns those into the messages radfed's handlers read
(an ArrayRecord keyed by state_dict name, a ConfigRecord) and the replies back into the
legacy form; `secagg_mod` applies Flower's `secaggplus_mod` only in runs that use it.
Messages of every other run pass through both untouched.
"""

from __future__ import annotations

import json

import flwr.compat.common.recorddict_compat as compat
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

KEYS_CONFIG = "state-keys"  # strategies.secagg: the state_dict keys, in parameter order


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `secaggplus_mod` for the messages of a secure-aggregation run only."""
    if msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def legacy_format_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Serve a legacy FitIns/EvaluateIns with radfed's handler; answer in the same form."""
    records = msg.content.array_records if msg.has_content() else {}
    kind = next((k for k in ("fitins", "evaluateins") if f"{k}.parameters" in records), None)
    if kind is None:
        return call_next(msg, context)
    ins = (compat.recorddict_to_fitins if kind == "fitins" else compat.recorddict_to_evaluateins)(msg.content, True)
    keys = json.loads(str(ins.config[KEYS_CONFIG]))
    arrays = parameters_to_ndarrays(ins.parameters)
    msg.content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(a) for k, a in zip(keys, arrays, strict=True)}),
            "config": ConfigRecord({k: v for k, v in ins.config.items() if k != KEYS_CONFIG}),
        }
    )
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    # Legacy results hold scalars only: the per-bin score counts (pooled figures) stay out.
    metrics = {k: v for k, v in reply.content["metrics"].items() if not isinstance(v, list)}
    examples = int(metrics.pop("num-examples"))
    clinic = reply.content["clinic"]
    metrics.update({"clinic-name": str(clinic["name"]), "clinic-device": str(clinic["device"])})
    ok = Status(code=Code.OK, message="")
    if kind == "fitins":
        weights = reply.content["arrays"]
        params = ndarrays_to_parameters([weights[k].numpy() for k in keys])
        content = compat.fitres_to_recorddict(FitRes(ok, params, examples, metrics), False)
    else:
        loss = float(metrics.get("val_loss", 0.0))
        content = compat.evaluateres_to_recorddict(EvaluateRes(ok, loss, examples, metrics))
    return Message(content, reply_to=msg)
