"""The ClientApp served inside the SuperNode's process (client_node.direct_runtime).

The same checks as Flower's HTTP Runtime API: only a token from a claimed task acts for
that task, and a task is handed out once. Federations with both ways of serving the
ClientApp run in tests/test_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def state():
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supernode.nodestate import NodeStateFactory

    return NodeStateFactory(objectstore_factory=ObjectStoreFactory()).state()


def _acquire(runtime):
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    return runtime.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))


def test_a_task_is_handed_out_once_and_only_its_token_acts_for_it(state):
    from flwr.proto.runtime_pb2 import PullTaskInputRequest, SendTaskHeartbeatRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.error import FlowerError

    from client_node.direct_runtime import DirectRuntime

    runtime = DirectRuntime(state)
    assert not _acquire(runtime).HasField("task")  # nothing pending yet
    task_id = state.create_task(task_type=TaskType.CLIENT_APP, run_id=7, fab_hash="f" * 64)
    got = _acquire(runtime)
    assert got.task.task_id == task_id and got.token
    assert not _acquire(runtime).HasField("task")  # claimed: not handed out twice

    assert runtime.for_task(got.token).SendTaskHeartbeat(SendTaskHeartbeatRequest()).success
    for token in (None, "", "forged-" + got.token, got.token[:-1]):
        client = DirectRuntime(state, token)
        with pytest.raises(FlowerError, match="authentication failed"):
            client.PullTaskInput(PullTaskInputRequest())
        with pytest.raises(FlowerError, match="authentication failed"):
            client.SendTaskHeartbeat(SendTaskHeartbeatRequest())


def test_the_heartbeat_of_a_task_the_supernode_dropped_does_not_signal_the_process(state):
    """Flower's HTTP heartbeat raises SIGINT in the ClientApp's process when the task is
    gone; in-process that would stop the SuperNode, so the direct heartbeat only warns."""
    from client_node.direct_runtime import DirectRuntime, heartbeat_fn

    beat = heartbeat_fn(DirectRuntime(state, "a-token-nobody-issued"))
    assert beat() is True and beat() is True  # no signal: this test process is still here


def test_the_state_factory_of_flowers_supernode_is_captured_once():
    code = (
        "from client_node.direct_runtime import capture_state_factory\n"
        "from flwr.supercore.object_store import ObjectStoreFactory\n"
        "from flwr.supernode.nodestate import NodeStateFactory\n"
        "from flwr.supernode import main\n"
        "seen = []\n"
        "capture_state_factory(seen.append)\n"
        "factory = NodeStateFactory(objectstore_factory=ObjectStoreFactory())\n"
        "app = main.create_app(state_factory=factory, superexec_auth_secret=None)\n"
        "assert seen == [factory], seen\n"
        "assert app.state.runtime_state_factory is factory\n"
        "try:\n"
        "    capture_state_factory(seen.append)\n"
        "except RuntimeError:\n"
        "    print('refused twice')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused twice" in proc.stdout
