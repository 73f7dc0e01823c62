"""`flower-supernode` with radfed's pacing: a clinic picks up the next round within a second.

Flower 1.42's SuperNode loop (flwr/supernode/start_client_internal.py) sleeps a
hard-coded 3 s whenever a pull from the SuperLink brings no message, and 0.5 s at a
time while it waits for the ClientApp's reply. After a clinic sends its update, the next
round's model therefore reaches it on average 1.5 s (up to 3 s) after the SuperLink has
it, and every reply leaves up to 0.5 s late: together a few seconds of every round.

`python -m client_node.supernode ARGS` is `flower-supernode ARGS` with those two pauses
replaced inside this process only (Flower's installed files are untouched):

- while a run is active (a message arrived in the last `ACTIVE_WINDOW_S`), an empty pull
  is followed by a pause that grows from `ACTIVE_FIRST_S` to `ACTIVE_MAX_S`; an idle
  node keeps Flower's 3 s (the SuperLink is not polled faster for nothing), unless the
  SuperLink held that empty pull for at least `HELD_S` (radfed's doors hold one for up to
  2 s until the ServerApp sends something, server.long_poll): then the next pull goes
  after `ACTIVE_FIRST_S`, so a new run's first round reaches an idle clinic at once
  instead of up to 3 s later, for one request every ~2 s;
- the wait for the ClientApp's reply (a local, in-memory check) polls every `REPLY_POLL_S`;
- a message fetched while its payload is still uploading is retried within a tenth of a second
  (radfed.object_pulls), not after Flower's 1-10 s back-off.

It relies on the internals of the pinned Flower (the module's `time` and
`_pull_and_store_message` names); `install()` refuses loudly when they are not there,
and tests/test_round_pacing.py checks them.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType

FLOWER_IDLE_S = 3  # Flower's pause after an empty pull
FLOWER_REPLY_WAIT_S = 0.5  # Flower's pause while waiting for a reply or its content
ACTIVE_WINDOW_S = 300.0
ACTIVE_FIRST_S = 0.1
ACTIVE_MAX_S = 1.0
GROWTH = 1.5
REPLY_POLL_S = 0.05
HELD_S = 1.0  # an empty pull that took this long was held by the SuperLink (long polling)


class Pacing:
    """Stands in for the `time` module inside Flower's SuperNode loop: every attribute is
    the real module's, except `sleep`, which shortens Flower's two fixed pauses."""

    def __init__(self, real: ModuleType = time):
        self._real = real
        self.last_message = float("-inf")
        self.held = False  # the last empty pull was held by the SuperLink
        self._pause = ACTIVE_FIRST_S

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def message_arrived(self) -> None:
        self.last_message = self._real.monotonic()
        self._pause = ACTIVE_FIRST_S

    def pause_for(self, seconds: float) -> float:
        """How long Flower's `sleep(seconds)` actually pauses."""
        if seconds == FLOWER_REPLY_WAIT_S:
            return REPLY_POLL_S
        if seconds == FLOWER_IDLE_S and self.held:
            return ACTIVE_FIRST_S  # the SuperLink itself waited for a message: ask again soon
        if seconds == FLOWER_IDLE_S and self._real.monotonic() - self.last_message < ACTIVE_WINDOW_S:
            pause, self._pause = self._pause, min(self._pause * GROWTH, ACTIVE_MAX_S)
            return pause
        return seconds

    def sleep(self, seconds: float) -> None:
        self._real.sleep(self.pause_for(seconds))


def install(module: ModuleType | None = None) -> Pacing:
    """Pace Flower's SuperNode loop in this process; returns the pacing in use."""
    if module is None:
        from flwr.supernode import start_client_internal as module
    pull = getattr(module, "_pull_and_store_message", None)
    if getattr(module, "time", None) is not time or pull is None:
        raise RuntimeError(
            "this Flower version's SuperNode loop is not the one radfed paces "
            "(flwr.supernode.start_client_internal changed); pin flwr==1.42.*"
        )
    pacing = Pacing()

    def pull_and_note(*args, **kwargs):
        asked = time.monotonic()
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            pacing.message_arrived()
        pacing.held = run_id is None and time.monotonic() - asked >= HELD_S
        return run_id

    from radfed.object_pulls import quicker_object_pulls

    quicker_object_pulls(module)
    module.time = pacing  # type: ignore[attr-defined]
    module._pull_and_store_message = pull_and_note  # type: ignore[attr-defined]
    return pacing


IN_PROCESS_ENV = "RADFED_CLIENTAPP_IN_PROCESS"  # "1": serve ClientApp tasks from a thread here


def main() -> None:
    import os

    from radfed.flower_env import timestamped_flower_logs

    timestamped_flower_logs()
    install()
    if os.environ.get(IN_PROCESS_ENV) == "1":
        from client_node.app_guard import approved_from_env
        from client_node.direct_runtime import capture_state_factory
        from client_node.worker import log_to_stderr, start_in_supernode

        log_to_stderr()
        approved = approved_from_env()
        capture_state_factory(lambda factory: start_in_supernode(factory, approved))
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
