"""The ClientApp as a virtual clinic of `coordinator simulate` (Flower's simulation engine).

A real clinic's SuperNode gives the ClientApp its node config (`data-path`, `cache-dir`,
`state-dir`, `clinic-name`, ...). Flower's simulation engine gives each virtual SuperNode
only `partition-id` and `num-partitions`, and its public `run_simulation` has no way to
pass more. So `coordinator simulate` writes a partition map (JSON: one entry of node
config per virtual clinic, server/virtual_clinics.py) and names it in `PARTITIONS_ENV`,
which the Ray workers inherit; `simulation_mod` fills the node config of a virtual node
from its entry before the ClientApp's handlers read it. The handlers are the same as at a
real clinic.

It acts only when the environment names a map *and* the node is a virtual one (its node
config has `partition-id` and no `data-path`): a real clinic's node is never touched.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import PARTITION_ID_KEY

PARTITIONS_ENV = "RADFED_SIMULATION_PARTITIONS"
MAP_VERSION = 1


@functools.lru_cache(maxsize=4)
def _clinics(path: str) -> list[dict[str, str | int]]:
    """The partition map's per-clinic node configs (read once per worker process)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != MAP_VERSION:
        raise ValueError(f"partition map version {data.get('version')!r}; this radfed reads {MAP_VERSION}")
    return [dict(c["node_config"]) for c in data["clinics"]]


def virtual_node_config(path: str | Path, partition_id: int) -> dict[str, str | int]:
    """The node config of virtual clinic `partition_id` in the partition map at `path`."""
    clinics = _clinics(str(path))
    if not 0 <= partition_id < len(clinics):
        raise ValueError(f"partition {partition_id} is not in the partition map ({len(clinics)} clinics)")
    return clinics[partition_id]


def simulation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Give a virtual SuperNode its clinic's node config, then run the handler."""
    path = os.environ.get(PARTITIONS_ENV, "")
    cfg = context.node_config
    if path and PARTITION_ID_KEY in cfg and "data-path" not in cfg:
        cfg.update(virtual_node_config(path, int(cfg[PARTITION_ID_KEY])))
    return call_next(msg, context)
