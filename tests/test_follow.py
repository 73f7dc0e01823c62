"""`coordinator run` follows a run: a SuperLink too loaded to answer is not a lost run."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

from radfed.store import Store
from server.launch import Connection, flower_status, follow


class SlowSuperLink(Connection):
    """A Control API that is listening but never answers `flwr ls` in time."""

    asked = 0

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        SlowSuperLink.asked += 1
        raise subprocess.TimeoutExpired(["flwr", *args], timeout)


def test_a_timed_out_question_is_no_answer_and_the_run_is_not_failed(tmp_path: Path) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    conn = SlowSuperLink(address=f"127.0.0.1:{listening.getsockname()[1]}", flwr_home=tmp_path / "flwr")
    assert flower_status(conn, "42") is None
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        exp = store.create_experiment("slow", "{}", "resnet18", "random", "fedavg")
        run = store.start_run(exp, "42", rounds_planned=1)

        def finish_later() -> None:
            while SlowSuperLink.asked < 4:  # Flower "could not be asked" several times in a row
                time.sleep(0.01)
            store.record_round(run, 1, val_auroc=0.9, num_clinics=2, num_examples=10)
            store.finish_run(run, "completed", final_auroc=0.9)

        worker = threading.Thread(target=finish_later)
        worker.start()
        status = follow(conn, store, "42", rounds=1, poll=0.01, flower_every=0.0)
        worker.join()
    listening.close()
    assert status["status"] == "completed", status
