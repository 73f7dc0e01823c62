"""A warm ClientApp worker: one long-lived process serving every message of this clinic.

By default Flower starts a new `flwr-clientapp` process for each message, which imports
torch and torchvision and rebuilds the model every time: 10-15 s per message on a
2-core machine, far more than a round's training on a small task. With the SuperNode in
`--isolation process` mode this worker takes its place: it asks the SuperNode's local
Runtime API for tasks (as Flower's SuperExec does) and runs each one in-process with the
same steps as flwr/supernode/runtime/run_clientapp.py, so imports, the installed app and
warm caches survive between messages.

It relies on Flower 1.42's internal runtime API (pinned in pyproject.toml). Each app
bundle passes the clinic's app gate before it is installed. `client-node start` restarts
the worker if it dies; `--isolation subprocess` falls back to Flower's own executor.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time

log = logging.getLogger("radfed.worker")
POLL_S = 0.2


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


def serve_task(address: str, token: str, approved: set[str], times: dict | None = None) -> str:
    """Run one ClientApp task end to end; returns its final sub-status. `times` gets the
    seconds spent receiving (input), in the ClientApp (handler) and sending (output)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    from client_node.app_guard import check_fab

    client = _client(
        address, [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)]
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
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


def run_worker(address: str, approved: set[str], poll: float = POLL_S) -> None:
    """Acquire ClientApp tasks from the SuperNode's Runtime API forever."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supernode.runtime import run_clientapp

    from radfed.object_pulls import quicker_object_pulls

    importlib.import_module("client_node.app")  # warm: torch, torchvision, the model code
    quicker_object_pulls(run_clientapp)  # the task's model, fetched while the SuperNode downloads it

    acquirer = _client(address, [RuntimeVersionHttpInterceptor(component_name="SuperExec")])
    log.info("warm ClientApp worker ready on %s", address)
    while True:
        res = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if res.HasField("task") and res.token:
            started, times = time.monotonic(), {}
            status = serve_task(address, res.token, approved, times)
            log.info(
                "task %s %s in %.2f s (%s)",
                res.task.task_id,
                status,
                time.monotonic() - started,
                ", ".join(f"{k} {v:.2f} s" for k, v in times.items()),
            )
        else:
            time.sleep(poll)


def main() -> None:
    parser = argparse.ArgumentParser(description="radfed's warm ClientApp worker (started by client-node start)")
    parser.add_argument("--runtime-api", required=True, help="The SuperNode's Runtime API, 127.0.0.1:PORT")
    args = parser.parse_args()
    from client_node.app_guard import approved_from_env
    from radfed.flower_env import timestamped_flower_logs

    timestamped_flower_logs()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s radfed %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    approved = approved_from_env()
    try:
        run_worker(args.runtime_api, approved)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
