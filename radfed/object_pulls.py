"""Flower's object pulls, retried within a tenth of a second instead of up to 10 s.

A Flower 1.42 message becomes visible as soon as its sender has announced it, before its
payload (the model's arrays, each a stored object) has finished uploading. Whoever pulls
it meanwhile (a SuperNode fetching the next round's model, the ServerApp fetching a
clinic's update) gets "object not yet available" and retries with a back-off that starts
at 1 s and doubles up to 10 s (`flwr.supercore.inflatable.inflatable_utils.pull_objects`).
radfed polls for messages within a fraction of a second (server.round_trip,
client_node.supernode), so it often arrives mid-upload: with Flower's back-off a 45 MB
model that finishes uploading 0.1 s later would wait another second or more.

The same happens inside a clinic: the SuperNode hands a task to the ClientApp worker
before it has finished downloading the task's model, and the worker's fetch backs off.

`quicker_object_pulls(module)` rebinds that module's `pull_objects` (or
`pull_and_inflate_object_from_tree`) to the same function with a back-off from `FIRST_S`
up to `CAP_S`, in the calling process only. At most Flower's few pull threads poll at
that pace (a few small requests per 5 MB chunk still uploading), and only while an
upload is in flight; a ClientApp inside the SuperNode's process (client_node.worker)
looks in memory, at `IN_PROCESS_FIRST_S` up to `IN_PROCESS_CAP_S`.
"""

from __future__ import annotations

import functools
from types import ModuleType

FIRST_S = 0.05
CAP_S = 0.1  # a 5 MB chunk takes 0.05-0.1 s to upload on 2 cores
IN_PROCESS_FIRST_S = 0.005
IN_PROCESS_CAP_S = 0.02


PULLERS = ("pull_objects", "pull_and_inflate_object_from_tree")


def quicker_object_pulls(module: ModuleType, first: float = FIRST_S, cap: float = CAP_S) -> None:
    """Rebind Flower's object pullers, as `module` imported them, to a back-off from
    `first` up to `cap` seconds."""
    from flwr.supercore.inflatable import inflatable_utils

    found = False
    for name in PULLERS:
        current, original = getattr(module, name, None), getattr(inflatable_utils, name)
        if current is original:
            setattr(module, name, functools.partial(original, initial_backoff=first, backoff_cap=cap))
        found = found or isinstance(getattr(module, name, None), functools.partial)
    if not found:
        raise RuntimeError(f"{module.__name__} no longer pulls objects through Flower's pull_objects; pin flwr==1.42.*")
