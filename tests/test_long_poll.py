"""The doors' long polling: an empty pull waits for a push from the other side, nothing else waits.

The wrapped app here is a small ASGI app that answers like Flower's routes (the same
protobuf answers); every federation test runs the real one behind `LongPoll`.
"""

from __future__ import annotations

import asyncio
import time

from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.proto.message_pb2 import Message as MessageProto
from flwr.proto.runtime_pb2 import PullAppMessagesResponse

from server.long_poll import Bell, LongPoll

PROTOBUF = [(b"content-type", b"application/protobuf")]


class Link:
    """Answers pulls with whatever `queued` holds for that side; pushes fill the other side."""

    def __init__(self) -> None:
        self.queued = {"fleet": 0, "runtime": 0}
        self.asked: list[str] = []
        self.bodies: list[bytes] = []
        self.push_status = 200

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"]
        message = await receive()
        self.bodies.append(message["body"])
        self.asked.append(path)
        status, body, headers = 200, b"", PROTOBUF
        if path == "/v1/fleet/pull-messages":
            body = PullMessagesResponse(messages_list=[MessageProto()] * self.queued["fleet"]).SerializeToString()
        elif path == "/v1/runtime/pull-messages":
            body = PullAppMessagesResponse(messages_list=[MessageProto()] * self.queued["runtime"]).SerializeToString()
        elif path == "/v1/runtime/push-messages":
            status = self.push_status
            self.queued["fleet"] += status == 200
        elif path == "/v1/fleet/push-messages":
            self.queued["runtime"] += 1
        elif path == "/v1/fleet/pull-object":
            status, headers = 503, [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def call(app, path: str, body: bytes = b"signed request") -> tuple[int, bytes]:
    step = max(4, len(body) // 8)  # a body arrives in pieces, as over a socket
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # no disconnect

    out: dict = {"body": b""}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return out["status"], out["body"]


def count(answer_type, body: bytes) -> int:
    return len(answer_type.FromString(body).messages_list)


def test_a_clinic_pull_is_held_until_the_serverapp_pushes_then_answered_at_once():
    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0)
        started = time.monotonic()
        pull = asyncio.create_task(call(app, "/v1/fleet/pull-messages"))
        await asyncio.sleep(0.3)
        assert not pull.done()  # nothing to deliver yet: held, not answered empty
        assert await call(app, "/v1/runtime/push-messages") == (200, b"")
        status, body = await asyncio.wait_for(pull, 5)
        assert status == 200 and count(PullMessagesResponse, body) == 1
        assert time.monotonic() - started < 10  # answered on the push, not after the 30 s hold
        # the same signed request, whole, each time Flower was asked
        assert link.bodies[0] == b"signed request" and link.bodies.count(b"signed request") == 3
        assert link.asked.count("/v1/fleet/pull-messages") == 2

    asyncio.run(scenario())


def test_the_serverapp_pull_waits_for_a_clinic_reply_not_for_its_own_pushes():
    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0)
        pull = asyncio.create_task(call(app, "/v1/runtime/pull-messages"))
        await asyncio.sleep(0.2)
        await call(app, "/v1/runtime/push-messages")  # the ServerApp's own push: no reply yet
        await asyncio.sleep(0.2)
        assert not pull.done()
        await call(app, "/v1/fleet/push-messages")  # a clinic's reply
        status, body = await asyncio.wait_for(pull, 5)
        assert status == 200 and count(PullAppMessagesResponse, body) == 1

    asyncio.run(scenario())


def test_an_empty_answer_goes_back_after_the_hold_and_a_refused_push_wakes_nobody():
    async def scenario():
        link, bell = Link(), Bell()
        link.push_status = 403
        app = LongPoll(link, bell, hold_s=0.5)
        pull = asyncio.create_task(call(app, "/v1/fleet/pull-messages"))
        await asyncio.sleep(0.1)
        assert (await call(app, "/v1/runtime/push-messages"))[0] == 403
        started = time.monotonic()
        status, body = await asyncio.wait_for(pull, 5)
        assert status == 200 and count(PullMessagesResponse, body) == 0  # the empty answer, after the hold
        assert time.monotonic() - started > 0.2
        assert bell.rings == {"runtime": 0, "fleet": 0}

    asyncio.run(scenario())


def test_messages_errors_and_other_routes_pass_straight_through():
    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0)
        link.queued["fleet"] = 2
        status, body = await asyncio.wait_for(call(app, "/v1/fleet/pull-messages"), 5)
        assert status == 200 and count(PullMessagesResponse, body) == 2
        assert await asyncio.wait_for(call(app, "/v1/fleet/pull-object", b"x" * 10), 5) == (503, b"")
        assert link.bodies[-1] == b"x" * 10  # a body sent in pieces reaches Flower whole
        assert bell.rings == {"runtime": 0, "fleet": 0}

    asyncio.run(scenario())


def test_closing_the_doors_answers_held_pulls_at_once_and_holds_no_more():
    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0)
        pull = asyncio.create_task(call(app, "/v1/runtime/pull-messages"))
        await asyncio.sleep(0.2)
        assert not pull.done()
        await bell.close()  # the SuperLink is stopping: uvicorn waits for open requests
        status, body = await asyncio.wait_for(pull, 5)
        assert status == 200 and count(PullAppMessagesResponse, body) == 0
        status, body = await asyncio.wait_for(call(app, "/v1/fleet/pull-messages"), 5)  # not held
        assert status == 200 and count(PullMessagesResponse, body) == 0

    asyncio.run(scenario())


def test_a_held_pull_whose_clinic_hung_up_is_not_asked_again_when_the_serverapp_pushes():
    """A clinic killed while its pull is held: the ServerApp's next message must not be
    taken from Flower on its behalf (it would be marked delivered to nobody, and the round
    would wait for a reply that cannot come)."""

    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0)
        hung_up = asyncio.Event()
        pending = [{"type": "http.request", "body": b"signed request", "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if pending:
                return pending.pop(0)
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/fleet/pull-messages", "headers": []}
        held = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.2)
        assert link.asked == ["/v1/fleet/pull-messages"] and not held.done()
        hung_up.set()  # the clinic is killed
        await asyncio.wait_for(held, 5)  # the hold ends at once
        await call(app, "/v1/runtime/push-messages")  # the ServerApp's next round
        await asyncio.sleep(0.2)
        assert link.asked.count("/v1/fleet/pull-messages") == 1 and link.queued["fleet"] == 1  # still there
        assert sent == []  # nothing written to a closed connection

    asyncio.run(scenario())


def test_the_clinics_door_hands_bodies_over_whole_and_refuses_oversized_ones_before_flower():
    async def scenario():
        link, bell = Link(), Bell()
        app = LongPoll(link, bell, hold_s=30.0, body_limit=64)
        await asyncio.wait_for(call(app, "/v1/fleet/pull-object", b"x" * 60), 5)
        assert link.bodies[-1] == b"x" * 60  # in one piece
        for path in ("/v1/fleet/push-object", "/v1/fleet/pull-object", "/v1/fleet/pull-messages"):
            status, body = await asyncio.wait_for(call(app, path, b"y" * 65), 5)
            assert status == 413 and b"too large" in body
        assert link.asked == ["/v1/fleet/pull-object"]  # the oversized ones never reached Flower
        control = LongPoll(link, bell)  # no limit at the control door, except for a pull
        status, _ = await asyncio.wait_for(call(control, "/v1/fleet/pull-messages", b"y" * (2 << 20)), 5)
        assert status == 413

    asyncio.run(scenario())


BODY_PROBE = """
import asyncio, sys, threading, time, httpx, uvicorn
from radfed.processes import free_port
if sys.argv[1] == "big":
    from server.doors import bodies_in_big_pieces
    bodies_in_big_pieces()
pieces = []
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.5)  # Flower busy elsewhere: the body waits in uvicorn meanwhile
    while True:
        message = await receive()
        pieces.append(len(message.get("body", b"")))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})
port = free_port()
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
httpx.post(f"http://127.0.0.1:{port}/v1/fleet/push-object", content=b"x" * (5 << 20), timeout=30)
print(len(pieces), sum(pieces))
"""


def test_a_model_chunk_reaches_the_app_in_one_piece_not_64_kb_at_a_time():
    """uvicorn pauses a connection once 64 KB of its body wait for the app; in the
    SuperLink process it buffers the whole 5 MB chunk instead (server.doors)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    counts = {}
    for mode in ("default", "big"):
        proc = subprocess.run(
            [sys.executable, "-c", BODY_PROBE, mode], cwd=root, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        pieces, size = map(int, proc.stdout.split())
        assert size == 5 << 20
        counts[mode] = pieces
    assert counts["big"] <= 2 < 10 <= counts["default"], counts
