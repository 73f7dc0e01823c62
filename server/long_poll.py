"""Long polling at the SuperLink's doors: a pull with nothing to deliver waits for a push.

Flower 1.42's SuperNodes and ServerApp poll the SuperLink for messages, and an empty
answer costs the caller a pause before it asks again: a clinic's SuperNode waits up to
1 s (radfed's pacing, client_node.supernode; Flower's own is 3 s), the ServerApp up to
0.5 s (server.round_trip). Between a clinic's reply and the next round's model, and
between the last reply and the ServerApp noticing it, those pauses sat on the path of
every round; and every empty answer was a request the SuperLink served (node signature,
SQL) for nothing.

`LongPoll(app, bell)` wraps Flower's ASGI app at each door (server.doors). A
`pull-messages` whose answer holds no message is not returned at once: it is held for up
to `HOLD_S` and asked again, unchanged, as soon as a `push-messages` from the other side
has been stored (the ServerApp's instructions for the clinics' pulls, a clinic's reply
for the ServerApp's pull), counted by a `Bell` shared by the doors of one process; unless
the caller hung up meanwhile (then it is not asked again, so no message is marked
delivered to a clinic that is gone). An
answer with messages, an error, or one that is not Flower's protobuf passes through
untouched; so does every other route. Request bodies are handed to Flower whole (it reads
them whole anyway, before its own checks of the caller; in one piece they do not crawl
through its streaming middlewares 64 KB at a time); at the clinics' door a body larger
than `body_limit` is refused (413) before Flower reads any of it, and a pull's larger
than `PULL_BODY_LIMIT` at every door. Callers see
an ordinary (if later) answer: Flower's clients wait 30 s for one, and the request is the
same signed request, re-checked by Flower each time (its signature stays valid for 5
minutes).

    parameters: HOLD_S (longest hold, seconds); `body_limit` (bytes any request may carry
    at this door, None: no limit); PULL_BODY_LIMIT (bytes a held pull may carry; larger
    ones are answered 413); PUSHES (route → the side it rings); `_answers()`
    (pull route → the push side it waits for and the protobuf answer to inspect).
"""

from __future__ import annotations

import asyncio
import time

HOLD_S = 2.0
PULL_BODY_LIMIT = 1 << 20  # a pull request is a few hundred bytes
TOO_LARGE = b"radfed: request body too large for this route\n"
RUNTIME, FLEET = "runtime", "fleet"
RANG, TIMEOUT, GONE = "rang", "timeout", "gone"
PUSHES = {"/v1/runtime/push-messages": RUNTIME, "/v1/fleet/push-messages": FLEET}


def _answers():
    from flwr.proto.fleet_pb2 import PullMessagesResponse
    from flwr.proto.runtime_pb2 import PullAppMessagesResponse

    return {
        "/v1/fleet/pull-messages": (RUNTIME, PullMessagesResponse),  # a clinic waits for the ServerApp
        "/v1/runtime/pull-messages": (FLEET, PullAppMessagesResponse),  # the ServerApp waits for a clinic
    }


class Bell:
    """Counts the pushes stored on each side and wakes the pulls waiting for one."""

    def __init__(self) -> None:
        self.rings = {RUNTIME: 0, FLEET: 0}
        self.closed = False
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made inside the doors' running loop
            self._changed = asyncio.Condition()
        return self._changed

    async def ring(self, side: str) -> None:
        self.rings[side] += 1
        async with self._condition():
            self._condition().notify_all()

    async def close(self) -> None:
        """The doors are shutting down: every held pull is answered now, and none is held
        again (a server stopping waits for its open requests)."""
        self.closed = True
        async with self._condition():
            self._condition().notify_all()

    async def wait_past(self, side: str, seen: int, timeout: float) -> bool:
        """Wait until `side` has rung more than `seen` times; False after `timeout` s or
        once the doors are closing."""
        if self.closed:
            return False
        condition = self._condition()
        async with condition:
            try:
                await asyncio.wait_for(condition.wait_for(lambda: self.closed or self.rings[side] > seen), timeout)
            except TimeoutError:
                return False
        return not self.closed


def _empty(answer_type, status: int, headers: list, body: bytes) -> bool:
    """True only for a successful protobuf answer that carries no message."""
    content_type = dict(headers).get(b"content-type", b"")
    if status != 200 or not content_type.startswith(b"application/protobuf"):
        return False
    try:
        return len(answer_type.FromString(body).messages_list) == 0
    except Exception:  # noqa: BLE001 - not what we expected: pass it through as it is
        return False


async def _read_body(receive, limit: int | None = None) -> bytes | None:
    """The request's whole body; None as soon as it grows past `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if limit is not None and size > limit:
            return None
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def send_plain(send, status: int, body: bytes) -> None:
    """Answer an ASGI request here, before Flower: `status` with a short plain-text body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LongPoll:
    """ASGI wrapper: empty `pull-messages` answers are held until a push or `HOLD_S`."""

    def __init__(self, app, bell: Bell, hold_s: float = HOLD_S, body_limit: int | None = None) -> None:
        self.app, self.bell, self.hold_s = app, bell, hold_s
        self.body_limit = body_limit
        self.pulls = _answers()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path not in self.pulls:
            body = await _read_body(receive, self.body_limit)
            if body is None:
                await send_plain(send, 413, TOO_LARGE)
                return
            receive = _replay(body, receive)
            noted: list[int] = []

            async def noting_send(message):
                if message["type"] == "http.response.start":
                    noted.append(message["status"])
                await send(message)

            await self.app(scope, receive, noting_send)
            if path in PUSHES and noted and noted[0] == 200:
                await self.bell.ring(PUSHES[path])
            return
        body = await _read_body(receive, min(PULL_BODY_LIMIT, self.body_limit or PULL_BODY_LIMIT))
        if body is None:
            await send_plain(send, 413, TOO_LARGE)
            return
        side, answer_type = self.pulls[path]
        deadline = time.monotonic() + self.hold_s
        while True:
            seen = self.bell.rings[side]  # before asking: a push stored meanwhile is not missed
            start, chunks = await self._ask(scope, body, receive)
            left = deadline - time.monotonic()
            if left <= 0 or not _empty(answer_type, start["status"], start.get("headers", []), b"".join(chunks)):
                break
            outcome = await self._ring_or_gone(side, seen, left, receive)
            if outcome == GONE:
                # The caller hung up while held (a clinic killed, a network cut): asking Flower
                # again would mark the next message delivered to nobody, and the round would
                # wait for a reply that cannot come.
                return
            if outcome == TIMEOUT:
                break  # nothing pushed in time: the empty answer goes back
        await send(start)
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _ring_or_gone(self, side: str, seen: int, left: float, receive) -> str:
        """Wait for a push on `side` (RANG), `left` seconds (TIMEOUT), or the caller to
        disconnect (GONE), whichever comes first."""
        ring = asyncio.ensure_future(self.bell.wait_past(side, seen, left))
        gone = asyncio.ensure_future(_disconnected(receive))
        done, pending = await asyncio.wait({ring, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if gone in done:
            return GONE
        return RANG if ring.result() else TIMEOUT

    async def _ask(self, scope, body: bytes, receive) -> tuple[dict, list[bytes]]:
        """Flower's answer to the buffered request: its start message and body chunks."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(scope), _replay(body, receive), capture)
        return start, chunks


async def _disconnected(receive) -> None:
    """Return once the caller has hung up (after its body, only a disconnect can come)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.01)  # nothing else is expected; never spin on it


def _replay(body: bytes, receive):
    """An ASGI `receive` that hands over `body` in one message, then the real one's events
    (after the body only a disconnect can come)."""
    delivered = False

    async def replay():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
