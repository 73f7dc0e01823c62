"""Round pacing: no fixed multi-second sleeps between a clinic's reply and the next step.

The federation runs that use these paths end to end are tests/test_e2e.py and
tests/test_demo.py; bench/round_overhead.py measures what they save per round.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
import time

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from client_node.supernode import (
    ACTIVE_FIRST_S,
    ACTIVE_MAX_S,
    FLOWER_IDLE_S,
    FLOWER_REPLY_WAIT_S,
    REPLY_POLL_S,
    Pacing,
)
from server.round_trip import MAX_PAUSE_S, send_and_receive
from tests.federation import ROOT


def test_flower_supernode_loop_still_has_the_pauses_radfed_replaces():
    """If the pinned Flower's SuperNode loop changes, the pacing must be looked at again."""
    from flwr.supernode import start_client_internal

    source = inspect.getsource(start_client_internal)
    assert f"time.sleep({FLOWER_IDLE_S})" in source
    assert f"time.sleep({FLOWER_REPLY_WAIT_S})" in source


def test_pacing_is_fast_during_a_run_and_flowers_own_when_idle_unless_pulls_are_held():
    pacing = Pacing()
    assert pacing.pause_for(FLOWER_IDLE_S) == FLOWER_IDLE_S  # no message yet: Flower's 3 s
    assert pacing.pause_for(FLOWER_REPLY_WAIT_S) == REPLY_POLL_S
    assert pacing.pause_for(7.0) == 7.0  # any other pause is Flower's
    pacing.message_arrived()
    pauses = [pacing.pause_for(FLOWER_IDLE_S) for _ in range(20)]
    assert pauses[0] == ACTIVE_FIRST_S and max(pauses) == ACTIVE_MAX_S
    assert pauses == sorted(pauses)
    pacing.message_arrived()  # the next message: quick again
    assert pacing.pause_for(FLOWER_IDLE_S) == ACTIVE_FIRST_S
    pacing.last_message -= 3600  # a run long over: back to Flower's idle pace
    assert pacing.pause_for(FLOWER_IDLE_S) == FLOWER_IDLE_S
    pacing.held = True  # ... unless the SuperLink holds empty pulls itself (long polling)
    assert pacing.pause_for(FLOWER_IDLE_S) == ACTIVE_FIRST_S


def test_an_idle_clinic_asks_again_at_once_only_after_a_pull_the_superlink_held():
    """Flower's loop as radfed runs it: an empty pull held ~1 s by the SuperLink is
    followed by a short pause, one answered at once by Flower's 3 s."""
    import types

    from flwr.supercore.inflatable import inflatable_utils

    from client_node.supernode import HELD_S, install

    answers = iter([(HELD_S + 0.1, None), (0.0, None), (0.0, 7)])

    def pull(*args, **kwargs):
        wait, run_id = next(answers)
        time.sleep(wait)
        return run_id

    module = types.ModuleType("flower_loop")
    module.time, module._pull_and_store_message = time, pull
    module.pull_objects = inflatable_utils.pull_objects
    pacing = install(module)
    assert module._pull_and_store_message() is None and pacing.held
    assert pacing.pause_for(FLOWER_IDLE_S) == ACTIVE_FIRST_S
    assert module._pull_and_store_message() is None and not pacing.held
    assert pacing.pause_for(FLOWER_IDLE_S) == FLOWER_IDLE_S
    assert module._pull_and_store_message() == 7 and not pacing.held


def test_supernode_wrapper_installs_pacing_and_is_flowers_cli():
    """`python -m client_node.supernode` replaces the loop's `time` and is flower-supernode."""
    code = (
        "from client_node.supernode import install, Pacing\n"
        "from flwr.supernode import start_client_internal as m\n"
        "p = install()\n"
        "assert m.time is p and isinstance(p, Pacing) and m.time.monotonic() > 0\n"
        "assert m._pull_and_store_message.__name__ == 'pull_and_note'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "client_node.supernode", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "--superlink" in proc.stdout, proc.stderr


class _Clinics(Grid):
    """A Grid whose 'clinics' reply after a given delay each (a reply store in memory):
    what send_and_receive sees of the SuperLink, timed."""

    def __init__(self, delays: dict[int, float]):
        self.delays, self.pulls = delays, 0
        self.replies: dict[str, Message] = {}
        self.lock = threading.Lock()

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id=dst_node_id, message_type=message_type)

    def push_messages(self, messages):
        ids = []
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{i}"
            ids.append(f"m{i}")
            threading.Timer(self.delays[message.metadata.dst_node_id], self._reply, (message,)).start()
        return ids

    def _reply(self, message: Message) -> None:
        reply = Message(RecordDict({"c": ConfigRecord({"at": time.monotonic()})}), reply_to=message)
        with self.lock:
            self.replies[message.metadata.message_id] = reply

    def pull_messages(self, message_ids):
        self.pulls += 1
        with self.lock:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def get_node_ids(self):
        return list(self.delays)

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("not used")

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None


@pytest.fixture(autouse=True)
def _inside_a_serverapp(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _messages(grid: _Clinics) -> list[Message]:
    return [grid.create_message(RecordDict(), "train", node, "1") for node in grid.delays]


def test_replies_are_picked_up_within_a_pause_not_flowers_three_seconds():
    grid = _Clinics({1: 0.3, 2: 1.2})
    started = time.monotonic()
    replies = send_and_receive(grid, _messages(grid), timeout=30)
    took = time.monotonic() - started
    assert len(replies) == 2
    last = max(float(r.content["c"]["at"]) for r in replies)
    assert time.monotonic() - last < MAX_PAUSE_S + 0.5  # Flower's loop: up to 3 s
    assert 1.2 <= took < 1.2 + MAX_PAUSE_S + 0.8
    assert grid.pulls < 30  # paced, not a busy loop


def test_timeout_returns_what_came_back():
    grid = _Clinics({1: 0.1, 2: 5.0})
    started = time.monotonic()
    replies = send_and_receive(grid, _messages(grid), timeout=1.0)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 1.0 <= time.monotonic() - started < 1.8


def test_an_object_still_uploading_is_fetched_within_a_tenth_of_a_second():
    """Flower's own pull_objects, as radfed's processes call it: an object that becomes
    available 0.3 s after the first try is there by ~0.35-0.5 s, not after Flower's 1 s+
    back-off; the rebinding applies to the module given and refuses an unknown one."""
    import types

    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    from radfed.object_pulls import CAP_S, quicker_object_pulls

    module = types.ModuleType("flower_user")
    module.pull_objects = inflatable_utils.pull_objects
    quicker_object_pulls(module)
    quicker_object_pulls(module)  # once is enough; again is harmless
    ready_at = time.monotonic() + 0.3

    def pull_one(object_id: str) -> bytes:
        if time.monotonic() < ready_at:
            raise ObjectUnavailableError(object_id)
        return b"arrays"

    started = time.monotonic()
    assert module.pull_objects(["a", "b"], pull_object_fn=pull_one) == {"a": b"arrays", "b": b"arrays"}
    assert time.monotonic() - started < 0.3 + CAP_S + 0.3
    with pytest.raises(RuntimeError, match="pin flwr"):
        quicker_object_pulls(types.ModuleType("elsewhere"))


def test_flower_log_lines_carry_a_timestamp_and_no_colour_codes_in_a_log_file():
    """What a SuperNode, worker or SuperLink writes to its log file (not a terminal)."""
    import logging
    import re

    from flwr.supercore.logger import LOGGER_NAME, ConsoleHandler

    from radfed.flower_env import timestamped_flower_logs

    handler = next(h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, ConsoleHandler))
    before = (handler.timestamps, handler.colored)
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 1, "Received successfully", None, None)
    try:
        assert "\x1b[" in handler.format(record) or not before[1]  # Flower's default: colour, no time
        timestamped_flower_logs()  # pytest's stderr is not a terminal
        line = handler.format(record)
        assert re.match(r"INFO \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}:\s+Received successfully$", line), line
        assert "\x1b[" not in line
    finally:
        handler.timestamps, handler.colored = before


def test_after_a_reply_the_next_pull_goes_at_once():
    """A second clinic's reply that landed while the first one's payload was coming in is
    fetched by the very next pull, not after a pause."""
    grid = _Clinics({1: 0.0, 2: 0.0})
    pauses: list[float] = []
    pulled = grid.pull_messages

    def one_at_a_time(message_ids):  # each pull brings at most one reply
        time.sleep(0.05)
        return pulled(sorted(message_ids)[:1])

    grid.pull_messages = one_at_a_time
    replies = send_and_receive(grid, _messages(grid), timeout=30, sleep=pauses.append)
    assert len(replies) == 2 and pauses == []
