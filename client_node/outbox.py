"""The clinic's own log of everything its ClientApp sends to the coordinator.

A Flower mod around every handler: after the reply is built, one JSON line per message
goes to the node's outbox log: message type, run, round, every metric and config value,
and for weights only tensor counts and bytes (as sent: serialised, half under a
half-precision transfer_dtype). The clinic's privacy officer can read
exactly what left the building; the file never leaves the clinic.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import Context, Message


def describe(reply: Message) -> dict:
    """What a reply carries, minus the tensor values."""
    entry: dict = {"type": reply.metadata.message_type, "run": reply.metadata.run_id}
    if reply.has_error():
        entry["error"] = reply.error.reason
        return entry
    content = reply.content
    entry["metrics"] = {name: dict(rec) for name, rec in content.metric_records.items()}
    entry["configs"] = {
        name: {k: v if not isinstance(v, bytes) else f"<{len(v)} bytes>" for k, v in rec.items()}
        for name, rec in content.config_records.items()
    }
    entry["arrays"] = {
        name: {"tensors": len(rec), "bytes": sum(len(a.data) for a in rec.values())}
        for name, rec in content.array_records.items()
    }
    return entry


def outbox_mod(msg: Message, context: Context, call_next) -> Message:
    """Log each reply to `node_config["outbox-log"]` (if set) before Flower sends it."""
    reply = call_next(msg, context)
    path = str(context.node_config.get("outbox-log", "") or "")
    if path:
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **describe(reply)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
    return reply
