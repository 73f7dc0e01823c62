"""`coordinator run` follows a run: a SuperLink too loaded to answer is not a lost run;
Flower's view of the run is asked in-process."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from radfed.store import Store
from server.launch import Connection, flower_status, follow


class SilentSuperLink:
    """A port that accepts connections and never answers (a SuperLink too loaded to reply)."""

    def __init__(self) -> None:
        self.listening = socket.socket()
        self.listening.bind(("127.0.0.1", 0))
        self.listening.listen()
        self.address = f"127.0.0.1:{self.listening.getsockname()[1]}"
        self.asked, self.held = 0, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listening.accept()
            except OSError:
                return
            self.held.append(conn)
            self.asked += 1

    def close(self) -> None:
        self.listening.close()
        for conn in self.held:
            conn.close()


class Impatient(Connection):
    """Asks Flower with a 0.3 s timeout instead of a minute."""

    def control(self, timeout: float = 60):
        return super().control(0.3)


def test_a_timed_out_question_is_no_answer_and_the_run_is_not_failed(tmp_path: Path) -> None:
    silent = SilentSuperLink()
    conn = Impatient(address=silent.address, flwr_home=tmp_path / "flwr", insecure=True)
    started = time.monotonic()
    assert flower_status(conn, "42") is None
    assert time.monotonic() - started < 10
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        exp = store.create_experiment("slow", "{}", "resnet18", "random", "fedavg")
        run = store.start_run(exp, "42", rounds_planned=1)

        def finish_later() -> None:
            while silent.asked < 4:  # Flower "could not be asked" several times in a row
                time.sleep(0.01)
            store.record_round(run, 1, val_auroc=0.9, num_clinics=2, num_examples=10)
            store.finish_run(run, "completed", final_auroc=0.9)

        worker = threading.Thread(target=finish_later)
        worker.start()
        status = follow(conn, store, "42", rounds=1, poll=0.01, flower_every=0.0)
        worker.join()
    silent.close()
    assert status["status"] == "completed", status


def test_flower_is_asked_from_this_process_and_an_unknown_run_is_told_apart(tmp_path: Path, federation) -> None:
    """A real SuperLink's Control API: a run it never had is "" (not "no answer"), asked
    without starting a `flwr` process."""
    conn = Connection(address=federation.control, flwr_home=tmp_path / "flwr", insecure=True)
    before = set(os.listdir("/proc"))
    assert flower_status(conn, "987654321") == ""
    assert conn.control().runs() == {}
    spawned = [p for p in set(os.listdir("/proc")) - before if p.isdigit() and _is_flwr(p)]
    assert not spawned


def _is_flwr(pid: str) -> bool:
    try:
        return b"flwr" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
