"""Who is missing when a round starts is recorded by name, once (server.recorder.roll_call).

Flower sends a round only to the nodes the SuperLink sees as connected; a clinic that
died between two rounds would otherwise vanish from the record without a word.
"""

from __future__ import annotations

from radfed.spec import ExperimentSpec
from radfed.store import Store
from server.recorder import RunRecorder
from strategies.utils import ClinicReply


def _reply(node_id: str, name: str) -> ClinicReply:
    return ClinicReply(node_id=node_id, clinic=name, device="cpu", metrics={"num-examples": 4.0, "train_loss": 0.5})


def _rows(store: Store) -> list[tuple[int, str, str]]:
    entry = store.leaderboard(include_running=True)[0]
    return sorted((c["server_round"], c["clinic"], c["phase"]) for c in entry["clinics"])


def test_a_clinic_gone_between_rounds_is_recorded_lost_once_and_a_rejoin_is_not(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'radfed.db'}")
    spec = ExperimentSpec(name="roll", rounds=4)
    exp = store.create_experiment(spec.name, spec.to_json(), spec.backbone, spec.weights, spec.strategy)
    run = store.start_run(exp, "9", rounds_planned=4)
    recorder = RunRecorder(store, run, spec, tmp_path / "ckpt")

    recorder.roll_call(1, ["1", "2", "3"])  # nobody has taken part yet: nobody is missing
    recorder.clinic_replies(1, "train", [_reply("1", "a"), _reply("2", "b"), _reply("3", "c")])
    recorder.roll_call(2, ["1", "2"])  # c's node stopped sending heartbeats
    recorder.clinic_replies(2, "train", [_reply("1", "a"), _reply("2", "b")])
    recorder.roll_call(3, ["1", "2"])  # still gone: not recorded a second time
    recorder.roll_call(3, ["1", "2", "33"])  # c restarted: a new node id, the same name
    recorder.clinic_replies(3, "train", [_reply("1", "a"), _reply("2", "b"), _reply("33", "c")])
    recorder.roll_call(4, ["1", "2", "33"])

    missing = [(r, c, p) for r, c, p in _rows(store) if p not in ("train", "evaluate")]
    assert missing == [(2, "c", "lost")]
    note = [c["note"] for c in store.leaderboard(include_running=True)[0]["clinics"] if c["phase"] == "lost"]
    assert "round 2" in note[0] and "round 1" in note[0]
