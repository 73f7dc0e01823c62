"""The SuperLink process with two doors: clinics' (Fleet API only) and the coordinator's.

Flower 1.42 serves its Fleet, Control and Runtime APIs from one FastAPI app on one port,
and the open-source Control API has no account authentication: whoever reaches that port
can register node keys, submit runs (code that the SuperLink then executes) and read the
federation. This module runs Flower's own app (`flwr.superlink.main.create_app`, the same
state, lifespan and SuperExec as `flower-superlink`) behind two uvicorn listeners in one
process:

- the **public door** (`--public-host/--public-port`, what clinics connect to) passes only
  the Fleet API routes and the health check; every other path gets 404 before any Flower
  code runs, whoever asks, the coordinator's own host included;
- the **control door** (Flower's `--host/--port`, always loopback) serves everything: the
  Control API for `coordinator run` and the supervisor, and the Runtime API for the
  ServerApp that Flower's SuperExec starts;
- optionally a **remote control door** (`--remote-host/--remote-port`): the same APIs for
  other machines, only to clients presenting a certificate issued by the federation CA
  (mutual TLS, `coordinator certs credential`).

Why in-process rather than a proxy in front: no extra hop for model-sized messages, no
second process holding the server key, nothing to orphan, and the allowlist is checked
on the parsed request path (no path-encoding tricks between a proxy and uvicorn).

The process dies with its parent (`coordinator superlink`, the supervisor): it is started
with Linux's parent-death signal (radfed.processes.spawn_bound), so killing the supervisor
never leaves a SuperLink serving without enrolment sync and revocation.

Run as `python -m server.doors --public-host H --public-port P [--remote-host H
--remote-port P --client-ca CA] -- FLOWER_SUPERLINK_ARGS...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys

from server.long_poll import Bell, LongPoll, send_plain

PUBLIC_PREFIX = "/v1/fleet/"
PUBLIC_EXACT = frozenset({"/health"})
REFUSED_BODY = b"radfed: not served on the clinics' door (Fleet API only)\n"


def public_path(path: str) -> bool:
    """True for the paths the clinics' door lets through: Fleet API routes and health."""
    if path in PUBLIC_EXACT:
        return True
    if not path.startswith(PUBLIC_PREFIX):
        return False
    rest = path[len(PUBLIC_PREFIX) :]
    # one route segment, no dot segments or encoded separators that a router might fold
    return bool(rest) and all(c.isalnum() or c == "-" for c in rest)


class FleetOnly:
    """ASGI wrapper: HTTP requests outside the Fleet API are answered 404 here."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and public_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "lifespan":  # the control door owns Flower's lifespan
            return
        if scope["type"] == "http":
            await send_plain(send, 404, REFUSED_BODY)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m server.doors", description=__doc__.split("\n")[0])
    parser.add_argument("--public-host", required=True)
    parser.add_argument("--public-port", type=int, required=True)
    parser.add_argument("--remote-host", default=None)
    parser.add_argument("--remote-port", type=int, default=None)
    parser.add_argument(
        "--client-ca", default=None, help="CA whose client certificates the remote control door requires (mutual TLS)."
    )
    if "--" not in argv:
        parser.error("Flower's SuperLink arguments follow '--'")
    split = argv.index("--")
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: list[str] | None = None) -> None:
    import importlib

    import uvicorn

    # the package re-exports a function under the module's name: fetch the module itself
    flower = importlib.import_module("flwr.superlink.cli.flower_superlink")
    from flwr.superlink.main import create_app

    from radfed.flower_env import timestamped_flower_logs

    args, flower_args = _parse(list(sys.argv[1:] if argv is None else argv))
    timestamped_flower_logs()
    patient_state_database()
    one_state_session_at_a_time()
    expired_tasks_swept_once_a_second()
    payloads_in_memory()
    bodies_in_big_pieces()
    sys.argv = ["flower-superlink", *flower_args]
    config = flower._parse_superlink_lifespan_config()  # noqa: SLF001 - Flower's own parser
    app = create_app(config, flower.SuperLinkLifespan)
    log_config = flower.get_uvicorn_log_config(flower.console_handler.level)
    tls = {"ssl_keyfile": config.ssl_keyfile, "ssl_certfile": config.ssl_certfile}
    bell = Bell()  # one for all doors: a push at one wakes the pulls held at another
    servers = [
        _Server(
            uvicorn.Config(
                LongPoll(app, bell), host=config.host, port=config.port, access_log=False, log_config=log_config, **tls
            )
        ),
        _Server(
            uvicorn.Config(
                FleetOnly(LongPoll(app, bell, body_limit=FLEET_BODY_LIMIT)),
                host=args.public_host,
                port=args.public_port,
                lifespan="off",
                access_log=False,
                log_config=log_config,
                **tls,
            )
        ),
    ]
    if args.remote_host:
        if not (args.client_ca and config.ssl_certfile):
            sys.exit("server.doors: a remote control door needs TLS and --client-ca")
        servers.append(
            _Server(
                uvicorn.Config(
                    LongPoll(app, bell),
                    host=args.remote_host,
                    port=args.remote_port,
                    lifespan="off",
                    access_log=False,
                    log_config=log_config,
                    ssl_ca_certs=args.client_ca,
                    ssl_cert_reqs=ssl.CERT_REQUIRED,
                    **tls,
                )
            )
        )
    asyncio.run(_serve_all(servers, bell))


STATE_BUSY_TIMEOUT_MS = 60_000
SWEEP_EVERY_S = 1.0  # how stale the expired-task sweep may be when a request only reads a run's status
FLEET_BODY_LIMIT = 32 << 20  # a clinic's largest request is one 5 MB chunk of a model (Flower's chunk size)
BODY_BUFFER = 8 << 20  # request-body bytes uvicorn takes from a connection before the app asks for them


def bodies_in_big_pieces(buffer: int = BODY_BUFFER) -> None:
    """Let uvicorn read up to `buffer` bytes of a request body before pausing the connection.

    uvicorn stops reading a connection once 64 KB of its request body wait for the app, and
    resumes when the app takes them: a 5 MB model chunk then reaches Flower in some 80
    hand-overs, each a trip through the event loop that every other transfer on this
    SuperLink is queued behind (a clinic's upload of a ResNet18: 0.15 s per 5 MB waiting
    for its body on 2 cores, 0.02 s with the whole chunk buffered). Flower reads every body
    whole anyway; the clinics' door still refuses one over `FLEET_BODY_LIMIT` before Flower
    reads it (server.long_poll), so one connection buffers at most `buffer` bytes.
    """
    from uvicorn.protocols.http import flow_control, h11_impl, httptools_impl

    for module in (flow_control, h11_impl, httptools_impl):
        if getattr(module, "HIGH_WATER_LIMIT", None) is None:
            raise RuntimeError(f"{module.__name__} has no HIGH_WATER_LIMIT: this uvicorn is not the one radfed tunes")
        module.HIGH_WATER_LIMIT = buffer


def one_state_session_at_a_time() -> None:
    """Let one thread at a time use Flower's SQLite state database in this process.

    Flower serves each request from a thread pool, and each thread opens its own SQLite
    connection: when two clinics upload their updates at once, their writes (a claimed
    object, the traffic counter) collide on SQLite's single write lock, and the loser
    sleeps in SQLite's busy handler (1 ms, then 2, 5, ... up to 100 ms at a time) instead
    of waiting just for the other to finish. The SuperLink process is the database's only
    user, so a lock around each outermost session costs nothing and removes the sleeps.
    A session re-entered by the same thread (Flower nests them) takes the lock again.
    """
    import threading
    from contextlib import contextmanager

    from flwr.supercore import sql_mixin

    session = sql_mixin.SqlMixin.session
    if getattr(session, "radfed_one_at_a_time", False):
        return
    lock = threading.RLock()

    @contextmanager
    def one_at_a_time(self):
        with lock, session(self) as opened:
            yield opened

    one_at_a_time.radfed_one_at_a_time = True  # type: ignore[attr-defined]
    sql_mixin.SqlMixin.session = one_at_a_time  # type: ignore[method-assign]


def expired_tasks_swept_once_a_second() -> None:
    """Let a run-status read skip Flower's sweep of expired tasks if one ran within a second.

    Flower 1.42 checks the run's status on every Fleet and Runtime request that moves an
    object (`check_abort`), and each `get_run_status` first sweeps the task table for
    expired heartbeats: two UPDATE statements built and compiled by SQLAlchemy, 5 ms of
    CPU on an idle 2-core coordinator and 15 ms on a busy one, under the state's one lock
    (one_state_session_at_a_time), for each of the ~100 requests a round makes. The sweep
    only files away tasks whose heartbeat lapsed (tens of seconds of patience): it is not
    what refuses them, as a lapsed token fails `get_task_by_token` on its own. So a read
    of a run's status (`get_run_status`, `get_run_info`) runs it at most once a second; every
    other caller (claiming, activating, finishing a task, storing its messages) still runs
    it each time.
    """
    import threading
    import time

    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState

    sweep = SqlLinkState._cleanup_expired_task_tokens  # noqa: SLF001 - the method being paced
    if getattr(sweep, "radfed_paced", False):
        return
    reading = threading.local()

    def paced(self) -> None:
        swept_at = self.__dict__.get("radfed_swept_at")
        if getattr(reading, "on", False) and swept_at is not None and time.monotonic() - swept_at < SWEEP_EVERY_S:
            return
        sweep(self)
        self.radfed_swept_at = time.monotonic()

    def status_read(method):
        def read(self, *args, **kwargs):
            reading.on = True
            try:
                return method(self, *args, **kwargs)
            finally:
                reading.on = False

        return read

    paced.radfed_paced = True  # type: ignore[attr-defined]
    SqlLinkState._cleanup_expired_task_tokens = paced  # type: ignore[method-assign]  # noqa: SLF001
    SqlLinkState.get_run_status = status_read(SqlLinkState.get_run_status)  # type: ignore[method-assign]
    SqlLinkState.get_run_info = status_read(SqlLinkState.get_run_info)  # type: ignore[method-assign]


def patient_state_database() -> None:
    """Let Flower's SQLite state database wait up to a minute for a lock, not 5 s.

    Flower 1.42 opens its state database with `busy_timeout = 5000`; on a loaded coordinator
    (2 cores, several federations, a checkpoint being written) a writer can hold the lock
    longer, and the SuperLink then fails the ServerApp's request with "database is locked",
    killing a healthy run. Its pragma list is read each time a connection opens, so
    replacing the module's tuple before the app starts is enough.
    """
    from flwr.supercore import sql_mixin

    sql_mixin.SQLITE_PRAGMAS = tuple(
        (name, str(STATE_BUSY_TIMEOUT_MS) if name == "busy_timeout" else value)
        for name, value in sql_mixin.SQLITE_PRAGMAS
    )


def payloads_in_memory() -> None:
    """Keep the payloads of messages in flight (models, updates) in memory, not in SQLite.

    Flower 1.42 stores every object a message carries in the same SQLite file as its state
    (`--database`): each model sent to or received from a clinic is written to disk as
    blobs, then read back and deleted, about 0.5 s per 45 MB on a 2-core coordinator, on
    the path of every round. Those payloads are worth nothing after a SuperLink restart:
    the ServerApp that waits for them dies with the SuperLink, and radfed resumes a run
    from its own checkpoints (`coordinator run --resume`); Flower drops a message whose
    payload it no longer holds (one error line) instead of handing it to a clinic.
    Nodes, runs and messages stay in the state database. In memory, the SuperLink holds
    at most the models in flight: one per round downwards plus one update per clinic until
    the ServerApp has pulled it.
    """
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.superlink import config_loader

    on_disk = config_loader.ObjectStoreFactory
    if getattr(on_disk, "radfed_in_memory", False):
        return
    if not isinstance(on_disk, type):
        raise RuntimeError("flwr.superlink.config_loader changed: pin flwr==1.42.*")

    def in_memory(database: str = FLWR_IN_MEMORY_DB_NAME):
        return on_disk(FLWR_IN_MEMORY_DB_NAME)

    in_memory.radfed_in_memory = True  # type: ignore[attr-defined]
    config_loader.ObjectStoreFactory = in_memory  # type: ignore[assignment]


class _Server:
    """A uvicorn server that leaves signal handling to `_serve_all` (one handler for both)."""

    def __init__(self, config) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        self.server = Quiet(config)

    def stop(self) -> None:
        self.server.should_exit = True


async def _serve_all(servers: list[_Server], bell=None) -> None:
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for server in servers:
            server.stop()
        if bell is not None:  # held pulls answered now: uvicorn waits for open requests
            closing.append(loop.create_task(bell.close()))

    closing: list[asyncio.Task] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    control, *others = servers
    control_task = asyncio.create_task(control.server.serve())
    while not control.server.started:  # Flower's lifespan (state, SuperExec) first
        if control_task.done():
            await control_task
            sys.exit(1)  # the control door could not start (port in use...)
        await asyncio.sleep(0.05)
    tasks = {control_task, *(asyncio.create_task(s.server.serve()) for s in others)}
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop_all()  # one door down: close them all
    await asyncio.gather(*tasks, return_exceptions=True)
    if not all(s.server.started for s in servers) or any(t.exception() for t in done):
        sys.exit(1)


if __name__ == "__main__":
    main()
