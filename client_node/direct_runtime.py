"""Flower's Runtime API without HTTP: the ClientApp served inside the SuperNode's process.

A Flower 1.42 SuperNode hands each task to its ClientApp executor through the Runtime
API, an HTTP server on loopback: the model arrives from the SuperLink into the
SuperNode's in-memory object store, then crosses that API again to the ClientApp (5 MB
request bodies parsed by Starlette and protobuf, hashed, copied) and the update comes
back the same way. On 2 cores those two local trips cost a clinic about as much CPU as
the two trips to and from the SuperLink, in every round.

`DirectRuntime` offers the methods of Flower's `RuntimeHttpClient` that a ClientApp
task uses, and answers each by calling the very handler function the SuperNode's HTTP
route would call (`flwr.supernode.servicer.runtime.runtime_handlers`), on the same
`NodeState`, with the same request and response messages; only the transport is gone.
A task's token is checked against the state as the HTTP route's dependency checks it.

`capture_state_factory(on_state)` hooks `flwr.supernode.main.create_app`, which Flower's
`flower-supernode` calls once with the state factory it shares between its Fleet loop and
the Runtime API, and passes that factory on. It relies on the pinned Flower's internals:
tests/test_direct_runtime.py checks it against Flower's own NodeState, and every
federation test runs its clinics through it (tests/test_e2e.py also one beside it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("radfed.worker")


class DirectRuntime:
    """A SuperNode's Runtime API called in-process; `token` authenticates one task (None:
    only `AcquireTask`, the executor's call)."""

    def __init__(self, state, token: str | None = None) -> None:
        from flwr.supernode.servicer.runtime import runtime_handlers

        self.state, self.token, self.handlers = state, token, runtime_handlers

    def for_task(self, token: str) -> DirectRuntime:
        """The same API, authenticated as the task `token` was issued to."""
        return DirectRuntime(self.state, token)

    def _task(self):
        from flwr.supercore.error import ApiErrorCode, FlowerError

        task = self.state.get_task_by_token(self.token) if self.token else None
        if task is None:
            raise FlowerError(ApiErrorCode.RUNTIME_AUTHENTICATION_FAILED, "Runtime task-token authentication failed.")
        return task

    def AcquireTask(self, request):  # noqa: N802 - Flower's client method names
        return self.handlers.acquire_task(request, self.state)

    def PullTaskInput(self, request):  # noqa: N802
        return self.handlers.pull_task_input(request, self.state, self._task())

    def PullMessages(self, request):  # noqa: N802
        return self.handlers.pull_messages(request, self.state, self._task())

    def PullObject(self, request):  # noqa: N802
        return self.handlers.pull_object(request, self.state, self._task())

    def ConfirmMessageReceived(self, request):  # noqa: N802
        return self.handlers.confirm_message_received(request, self.state, self._task())

    def PushMessages(self, request):  # noqa: N802
        return self.handlers.push_messages(request, self.state, self._task())

    def PushObject(self, request):  # noqa: N802
        return self.handlers.push_object(request, self.state, self._task())

    def PushTaskOutput(self, request):  # noqa: N802
        return self.handlers.push_task_output(request, self.state, self._task())

    def SendTaskHeartbeat(self, request):  # noqa: N802
        from flwr.supercore.servicer.runtime import runtime_handlers as core_handlers

        return core_handlers.send_task_heartbeat(request, self.state, self._task())

    def close(self) -> None:
        """Nothing to close (the HTTP client's counterpart)."""


def heartbeat_fn(client: DirectRuntime) -> Callable[[], bool]:
    """The task's heartbeat. Flower's HTTP version raises SIGINT in the ClientApp's own
    process when the SuperNode no longer knows the task; here that process is the
    SuperNode, so the task is left to finish and its reply is refused instead."""
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    warned: list[bool] = []

    def beat() -> bool:
        try:
            ok = client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success
        except Exception:  # noqa: BLE001 - a task the state no longer knows
            ok = False
        if not ok and not warned:
            warned.append(True)
            log.warning("the SuperNode no longer holds this task (run stopped?); its reply will be dropped")
        return True

    return beat


def capture_state_factory(on_state: Callable[[object], None]) -> None:
    """Call `on_state(state_factory)` when this process's `flower-supernode` builds its
    Runtime API (once, before it connects to the SuperLink)."""
    from flwr.supernode import main as supernode_main

    create_app = supernode_main.create_app
    if getattr(create_app, "radfed_captures", False):
        raise RuntimeError("capture_state_factory was already installed in this process")

    def capturing_create_app(state_factory=None, **kwargs):
        app = create_app(state_factory=state_factory, **kwargs)
        if state_factory is not None:
            on_state(state_factory)
        return app

    capturing_create_app.radfed_captures = True  # type: ignore[attr-defined]
    supernode_main.create_app = capturing_create_app
