"""A round's message exchange without Flower's fixed 3 s pull sleep.

Flower 1.42's `Grid.send_and_receive` pushes the messages, then pulls replies and sleeps
a hard-coded 3 s between pulls (flwr/superlink/grid/http_grid.py), so every train and
evaluate broadcast ends on average 1.5 s (up to 3 s) after the last clinic replied.
`send_and_receive` here does the same through the Grid's public `push_messages` /
`pull_messages`: after a pull that brought replies it pulls again at once (a second
clinic's reply often lands while the first one's payload is coming in), after an empty
one it pauses from `FIRST_PAUSE_S` up to `MAX_PAUSE_S`: a reply is picked up within half
a second, and a round of minutes costs the SuperLink two loopback requests a second
(radfed's doors also hold an empty pull until a reply arrives, server.long_poll). (A reply fetched while its
payload is still uploading is retried quickly too: radfed.object_pulls, set up by the
ServerApp.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 0.5
GROWTH = 1.5


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float | None = None, sleep=time.sleep
) -> list[Message]:
    """Push `messages`, then pull until every one has a reply or `timeout` seconds pass
    (None: wait for all, as Flower does). Returns the replies received."""
    waiting = set(grid.push_messages(messages))
    end = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    pause = FIRST_PAUSE_S
    while waiting:
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if not waiting:
            break
        if end is not None and time.monotonic() >= end:
            break
        if got:  # another reply may have landed while this one's payload came in: ask at once
            pause = FIRST_PAUSE_S
            continue
        sleep(pause if end is None else max(0.0, min(pause, end - time.monotonic())))
        pause = min(pause * GROWTH, MAX_PAUSE_S)
    return replies
