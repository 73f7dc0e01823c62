"""A warm ClientApp worker: one long-lived executor serving every message of this clinic.

By default Flower starts a new `flwr-clientapp` process for each message, which imports
torch and torchvision and rebuilds the model every time: 10-15 s per message on a
2-core machine, far more than a round's training on a small task. With the SuperNode in
`--isolation process` mode this worker takes its place: it asks the SuperNode's local
Runtime API for tasks (as Flower's SuperExec does) and runs each one in-process with the
same steps as flwr/supernode/runtime/run_clientapp.py, so imports, the installed app and
warm caches survive between messages.

By default (`client-node start --isolation thread`) the worker is a thread of the
SuperNode's own process and calls the Runtime API's handlers directly
(client_node.direct_runtime), so the model and the update are not copied through a
local HTTP server twice per round; `--isolation worker` runs it as a separate process
that reaches the SuperNode over that API (a ClientApp crash then spares the SuperNode).

It relies on Flower 1.42's internal runtime API (pinned in pyproject.toml). Each app
bundle passes the clinic's app gate before it is installed. `client-node start` restarts
the worker (or the SuperNode with it) if it dies; `--isolation subprocess` falls back to
Flower's own executor.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time

log = logging.getLogger("radfed.worker")
POLL_S = 0.2  # a worker process asks the Runtime API over HTTP
IN_PROCESS_POLL_S = 0.02  # in-process, asking is a lookup in memory


def _client(address: str, interceptors: list):
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def serve_task(client, approved: set[str], times: dict | None = None, heartbeat_fn=None) -> str:
    """Run one ClientApp task end to end through `client` (the SuperNode's Runtime API for
    this task: over HTTP, or in-process, client_node.direct_runtime); returns its final
    sub-status. `times` gets the seconds spent receiving (input), in the ClientApp
    (handler) and sending (output)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    from client_node.app_guard import check_fab

    heartbeat = HeartbeatSender(heartbeat_fn or make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    times = {} if times is None else times
    started = time.monotonic()
    try:
        message, context, run, fab = pull_task_input(client)
        check_fab(fab.content, approved)
        install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        times["input"] = time.monotonic() - started
        reply = load(run.fab_id, run.fab_version, fab.hash_str)(message=message, context=context)
        times["handler"] = time.monotonic() - started - times["input"]
        status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - every failure becomes an error reply, as in Flower
        log.exception("ClientApp task failed")
        code = (
            ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            if isinstance(ex, LoadClientAppError)
            else ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        )
        details = f"{type(ex).__name__}: {ex}".splitlines()[0][:300]
        if message is not None:
            reply = Message(Error(code=code, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client, context, status, details)
            heartbeat.stop()
            client.close()
            times["output"] = time.monotonic() - started - times.get("input", 0.0) - times.get("handler", 0.0)
    return status


def serve_forever(
    acquirer, task_client, approved: set[str], where: str, poll: float = POLL_S, pulls: tuple[float, float] = ()
) -> None:
    """Acquire ClientApp tasks through `acquirer` forever and serve each through
    `task_client(token)`, which returns the task's client and its heartbeat function
    (None: Flower's HTTP heartbeat). `pulls`: the first and longest pause between tries
    for a chunk of the task's model the SuperNode is still downloading
    (radfed.object_pulls; default: its pace for HTTP)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supernode.runtime import run_clientapp

    from radfed.object_pulls import quicker_object_pulls

    importlib.import_module("client_node.app")  # warm: torch, torchvision, the model code
    quicker_object_pulls(run_clientapp, *pulls)  # the task's model, fetched while the SuperNode downloads it
    log.info("warm ClientApp worker ready (%s)", where)
    while True:
        res = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if res.HasField("task") and res.token:
            started, times = time.monotonic(), {}
            client, heartbeat = task_client(res.token)
            status = serve_task(client, approved, times, heartbeat)
            log.info(
                "task %s %s in %.2f s (%s)",
                res.task.task_id,
                status,
                time.monotonic() - started,
                ", ".join(f"{k} {v:.2f} s" for k, v in times.items()),
            )
        else:
            time.sleep(poll)


def run_worker(address: str, approved: set[str], poll: float = POLL_S) -> None:
    """Serve the tasks of the SuperNode whose Runtime API listens on `address` (a separate
    worker process, `client-node start --isolation worker`)."""
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor

    def task_client(token: str):
        interceptors = [
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ]
        return _client(address, interceptors), None

    acquirer = _client(address, [RuntimeVersionHttpInterceptor(component_name="SuperExec")])
    serve_forever(acquirer, task_client, approved, f"Runtime API {address}", poll)


def start_in_supernode(state_factory, approved: set[str], poll: float = IN_PROCESS_POLL_S):
    """Serve this SuperNode's tasks from a thread of its own process (`client-node start`'s
    default): the task's model and update never cross the local Runtime API
    (client_node.direct_runtime). If the thread dies, so does the process, and
    `client-node start` starts both again."""
    import os
    import threading

    from client_node.direct_runtime import DirectRuntime, heartbeat_fn
    from radfed.object_pulls import IN_PROCESS_CAP_S, IN_PROCESS_FIRST_S

    def serve() -> None:
        try:
            runtime = DirectRuntime(state_factory.state())

            def task_client(token: str):
                client = runtime.for_task(token)
                return client, heartbeat_fn(client)

            pulls = (IN_PROCESS_FIRST_S, IN_PROCESS_CAP_S)  # a look in memory, not a request
            serve_forever(runtime, task_client, approved, "in the SuperNode process", poll, pulls)
        except BaseException:  # noqa: BLE001 - a SuperNode without its ClientApp must not linger
            log.exception("the in-process ClientApp worker stopped; ending the SuperNode")
            os._exit(70)

    thread = threading.Thread(target=serve, name="radfed-clientapp", daemon=True)
    thread.start()
    return thread


def log_to_stderr() -> None:
    """The worker's task lines on this process's stderr (the clinic's log)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s radfed %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main() -> None:
    parser = argparse.ArgumentParser(description="radfed's warm ClientApp worker (started by client-node start)")
    parser.add_argument("--runtime-api", required=True, help="The SuperNode's Runtime API, 127.0.0.1:PORT")
    args = parser.parse_args()
    from client_node.app_guard import approved_from_env
    from radfed.flower_env import timestamped_flower_logs

    timestamped_flower_logs()
    log_to_stderr()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    approved = approved_from_env()
    try:
        run_worker(args.runtime_api, approved)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
