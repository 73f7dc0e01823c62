"""Half-precision weight transfer (spec `transfer_dtype`): the codec's error bounds, the
spec check, the server's and the clinic's ends on real Flower messages (with Flower's DP
wrappers and clipping mods), and one real federation whose recorded bytes are halved.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity

from radfed.spec import ExperimentSpec, SpecError, from_mapping, spec_to_toml
from radfed.transfer import (
    TransferError,
    cast_array,
    decode_array,
    decode_record,
    delta_array,
    encode_record,
    to_half,
)

RNG = np.random.default_rng(0)
WEIGHTS = (RNG.standard_normal(50_000) * 0.1).astype(np.float32)
# unit roundoff of each format: nearest is within half a step, toward zero within one step
STEP = {"bfloat16": 2.0**-7, "float16": 2.0**-10}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cast_round_trip_is_torchs_cast_and_within_half_a_step(dtype):
    array = cast_array(WEIGHTS, dtype)
    back = decode_array(array)
    assert back.dtype == np.float32 and back.shape == WEIGHTS.shape
    assert len(array.data) == 2 * WEIGHTS.size  # no header: exactly half of float32's bytes
    assert np.array_equal(back, torch.from_numpy(WEIGHTS).to(getattr(torch, dtype)).float().numpy())
    normal = np.abs(WEIGHTS) > 1e-4  # float16 loses relative precision below its normal range
    relative = np.abs(back - WEIGHTS)[normal] / np.abs(WEIGHTS)[normal]
    assert relative.max() <= STEP[dtype] / 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_changes_round_toward_zero_so_no_update_grows(dtype):
    """Clinic → server: the change, rounded toward zero: no element and no norm grows
    (a norm clipped at the clinic still holds), and each is within one step."""
    reference = WEIGHTS
    new = WEIGHTS + (RNG.standard_normal(WEIGHTS.size) * 1e-3).astype(np.float32)
    change = new - reference
    got = decode_array(delta_array(new, reference, dtype), reference) - reference
    assert np.all(np.abs(got) <= np.abs(change) * (1 + 1e-6) + 1e-12)
    assert np.linalg.norm(got) <= np.linalg.norm(change)
    normal = np.abs(change) > 1e-4
    assert (np.abs(got - change)[normal] / np.abs(change)[normal]).max() <= STEP[dtype] * 1.01


def test_a_small_update_survives_as_a_change_but_not_as_rounded_weights():
    """Why replies carry changes: 0.5 + 1e-4 rounds back to 0.5 in bfloat16 (step 2^-8
    there), so sending the trained weights would lose the update; its change keeps it."""
    reference = np.full(1000, 0.5, np.float32)
    new = reference + np.float32(1e-4)
    as_weights = decode_array(cast_array(new, "bfloat16"))
    assert np.array_equal(as_weights, reference)  # the update is gone
    as_change = decode_array(delta_array(new, reference, "bfloat16"), reference) - reference
    assert np.allclose(as_change, 1e-4, rtol=2**-7)


def test_special_values_and_float16_range():
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(np.float32).max], np.float32)
    back = decode_array(cast_array(special, "bfloat16"))
    assert np.isnan(back[0]) and list(back[1:5]) == [np.inf, -np.inf, 0.0, 0.0] and back[5] == np.inf
    with pytest.raises(TransferError, match="beyond float16's range.*bfloat16") as info:
        cast_array(np.array([1.0, 7e4], np.float32), "float16")
    assert "\n" not in str(info.value)
    saturated = to_half(np.array([7e4, -7e4], np.float32), "float16", toward_zero=True)
    assert list(saturated.astype(np.float32)) == [65504.0, -65504.0]


def test_records_cast_only_float_tensors_not_kept():
    state = {
        "conv.weight": WEIGHTS[:64].reshape(4, 16),
        "bn.running_var": np.ones(4, np.float32),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    record = ArrayRecord({k: Array(v) for k, v in state.items()})
    sent = encode_record(record, "float16", keep={"bn.running_var"})
    assert sent["conv.weight"].stype == "radfed.cast/float16" and len(sent["conv.weight"].data) == 128
    for key in ("bn.running_var", "bn.num_batches_tracked"):  # the very same arrays, untouched
        assert sent[key] is record[key]
    assert record["conv.weight"].stype == "numpy.ndarray"  # the server's copy stays float32
    assert decode_record(sent) == {"conv.weight": "float16"}
    assert sent["conv.weight"].numpy().dtype == np.float32
    assert sent["bn.num_batches_tracked"].numpy().dtype == np.int64


def test_undecodable_payloads_are_refused():
    change = delta_array(WEIGHTS[:4], WEIGHTS[:4], "bfloat16")
    with pytest.raises(TransferError, match="without a reference"):
        decode_record(ArrayRecord({"w": change}))
    short = Array(dtype="bfloat16", shape=(4,), stype="radfed.cast/bfloat16", data=b"\0" * 6)
    with pytest.raises(TransferError, match="payload of 6 bytes"):
        decode_array(short)


def test_spec_field_is_checked_in_one_line():
    assert ExperimentSpec(name="x").transfer_dtype == "float32"
    spec = from_mapping({"name": "x", "transfer_dtype": "bfloat16"})
    assert ExperimentSpec.from_json(spec.to_json()).transfer_dtype == "bfloat16"
    assert 'transfer_dtype = "bfloat16"' in spec_to_toml(spec)
    for table, needle in (
        ({"transfer_dtype": "int8"}, "allowed: float32, bfloat16, float16"),
        (
            {"transfer_dtype": "float16", "min_clinics": 3, "privacy": {"mode": "secagg+"}},
            "does not work with privacy mode secagg",
        ),
    ):
        with pytest.raises(SpecError, match=needle) as info:
            from_mapping({"name": "x", **table})
        assert "\n" not in str(info.value) and "transfer_dtype" in str(info.value)


# --- both ends on real Flower messages -------------------------------------------------

GLOBAL = {
    "w": (RNG.standard_normal(4096) * 0.1).astype(np.float32),
    "bn.running_var": np.full(3, 0.5, np.float32),
    "bn.num_batches_tracked": np.array(3, np.int64),
}


@pytest.fixture()
def server_identity(monkeypatch):
    """Messages need the sending task's identity, as inside a ServerApp."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class NodeList:
    """The part of a Grid that `configure_train` uses."""

    def get_node_ids(self):
        return [11, 12]


class Recorder:
    """Keeps the bytes a strategy reports (the server's RunRecorder writes them to SQL)."""

    def __init__(self) -> None:
        self.down: dict[str, int] = {}
        self.up: list[int] = []

    def sent(self, server_round, phase, bytes_by_node):
        self.down.update(bytes_by_node)

    def clinic_replies(self, server_round, phase, replies):
        self.up += [r.bytes_up for r in replies]

    def round_metrics(self, *args):
        pass

    def excluded(self, server_round, reply, reason):
        raise AssertionError(f"update excluded: {reason}")

    def late(self, *args):
        pass

    def roll_call(self, *args):
        pass


def _over_the_wire(msg: Message) -> Message:
    """What a clinic receives: its own copy of the records (a SuperLink serialises them)."""
    content = RecordDict(
        {
            name: ArrayRecord(dict(rec.items())) if isinstance(rec, ArrayRecord) else rec
            for name, rec in msg.content.items()
        }
    )
    return Message(content, dst_node_id=msg.metadata.dst_node_id, message_type=MessageType.TRAIN)


def _clinic(step: np.ndarray):
    """A train handler: checks it gets float32, moves w by `step`, and its buffers by its
    own data (under DP they go back as received, as radfed's ClientApp does)."""

    def train(msg: Message, context: Context) -> Message:
        got = msg.content["arrays"]
        assert all(a.stype == "numpy.ndarray" for a in got.values())
        trained = {
            "w": got["w"].numpy() + step,
            "bn.running_var": np.full(3, 0.7, np.float32),
            "bn.num_batches_tracked": np.array(9, np.int64),
        }
        if msg.content["config"].get("local-stats", False):
            trained.update({k: got[k].numpy() for k in ("bn.running_var", "bn.num_batches_tracked")})
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in trained.items()}),
                    "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.5}),
                }
            ),
            reply_to=msg,
        )

    return train


@pytest.mark.parametrize("mode", ["none", "server-fixed", "client-fixed"])
def test_a_round_travels_in_half_the_bytes_and_aggregates_in_float32(server_identity, mode):
    """Server → clinic → server in bfloat16 on real messages: bytes recorded both ways are
    about half, the clinic's handler sees float32, and the aggregate is the float32 mean
    of the clinics' models (within one bfloat16 step of each change). Under differential
    privacy clipping runs in float32 on decoded updates (server side) or before the cast
    (clinic side, Flower's mod) and the bound still holds after it."""
    from client_node.app import clipping_mod
    from client_node.transfer import transfer_mod
    from strategies import build_strategy

    privacy = {} if mode == "none" else {"mode": mode, "noise_multiplier": 0.0, "clipping_norm": 0.05}
    spec = ExperimentSpec(name="t", min_clinics=2, transfer_dtype="bfloat16", privacy=privacy)
    recorder = Recorder()
    keep = ["bn.running_var", "bn.num_batches_tracked"]
    strategy = build_strategy(spec, recorder, trainable_keys={"w"}, statistics_keys=keep)
    sent = list(
        strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), ConfigRecord(), NodeList())
    )
    full = sum(len(Array(v).data) for v in GLOBAL.values())  # as float32 (.npy) would travel
    half = GLOBAL["w"].size * 2 + full - len(Array(GLOBAL["w"]).data)  # buffers stay float32
    assert list(recorder.down.values()) == [half, half] and half < 0.51 * full
    steps = [np.full(4096, 2.5e-4, np.float32), np.full(4096, -7.5e-4, np.float32)]
    context = Context(run_id=1, node_id=11, node_config={}, state=RecordDict(), run_config={})
    replies = [
        transfer_mod(_over_the_wire(m), context, lambda msg, ctx, s=s: clipping_mod(msg, ctx, _clinic(s)))
        for m, s in zip(sent, steps)
    ]
    assert all(r.content["arrays"]["w"].stype == "radfed.delta/bfloat16" for r in replies)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert recorder.up == [half, half]
    result = arrays["w"].numpy()
    assert result.dtype == np.float32
    if mode == "none":
        np.testing.assert_allclose(result - GLOBAL["w"], np.mean(steps, axis=0), rtol=2**-7)
    else:  # each change clipped to norm 0.05 (their norms are 0.016 and 0.048: under it)
        change = result - GLOBAL["w"]
        assert np.linalg.norm(change) <= 0.05
        np.testing.assert_allclose(change, np.mean(steps, axis=0), rtol=2**-6)
    if mode == "none":  # buffers travel float32: the clinics' mean
        np.testing.assert_allclose(arrays["bn.running_var"].numpy(), 0.7)


def test_head_only_rounds_cast_the_head_and_send_the_backbone_float32(server_identity):
    """freeze = "all": the head travels in bfloat16, the backbone (once, checked by digest at
    the clinic) as it is; the clinic's handler gets both in float32."""
    from client_node.transfer import transfer_mod
    from strategies import build_strategy
    from strategies.head_only import BACKBONE_KEY

    spec = ExperimentSpec(name="t", min_clinics=2, freeze="all", transfer_dtype="bfloat16")
    backbone = ArrayRecord({"net.conv1.weight": Array(WEIGHTS[:64].reshape(4, 16))})
    strategy = build_strategy(spec, Recorder(), backbone=backbone)
    head = ArrayRecord({"net.fc.weight": Array(GLOBAL["w"])})
    first = list(strategy.configure_train(1, head, ConfigRecord(), NodeList()))
    assert all(m.content[BACKBONE_KEY] is backbone for m in first)
    assert all(m.content["arrays"]["net.fc.weight"].stype == "radfed.cast/bfloat16" for m in first)
    seen = {}

    def train(msg, context):
        seen.update({name: {k: a.stype for k, a in rec.items()} for name, rec in msg.content.array_records.items()})
        trained = {"net.fc.weight": Array(msg.content["arrays"]["net.fc.weight"].numpy() + 1e-3)}
        return Message(
            RecordDict({"arrays": ArrayRecord(trained), "metrics": MetricRecord({"num-examples": 5})}), reply_to=msg
        )

    context = Context(run_id=1, node_id=11, node_config={}, state=RecordDict(), run_config={})
    reply = transfer_mod(_over_the_wire(first[0]), context, train)
    assert seen == {"arrays": {"net.fc.weight": "numpy.ndarray"}, BACKBONE_KEY: {"net.conv1.weight": "numpy.ndarray"}}
    assert reply.content["arrays"]["net.fc.weight"].stype == "radfed.delta/bfloat16"


def test_clinic_clipping_bound_survives_the_cast(server_identity):
    """A clinic's clipped update (Flower's fixedclipping_mod) stays within the clipping
    norm after the bfloat16 cast: changes are rounded toward zero."""
    from client_node.app import clipping_mod
    from client_node.transfer import transfer_mod

    received = ArrayRecord({"w": cast_array(GLOBAL["w"], "bfloat16")})
    base = decode_array(received["w"])
    msg = Message(
        RecordDict({"arrays": received, "config": ConfigRecord({"clipping_norm": 0.01})}),
        dst_node_id=11,
        message_type=MessageType.TRAIN,
    )
    big = RNG.standard_normal(GLOBAL["w"].size).astype(np.float32)

    def train(msg, context):
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({"w": Array(msg.content["arrays"]["w"].numpy() + big)}),
                    "metrics": MetricRecord({"num-examples": 1}),
                }
            ),
            reply_to=msg,
        )

    context = Context(run_id=1, node_id=11, node_config={}, state=RecordDict(), run_config={})
    reply = transfer_mod(msg, context, lambda m, c: clipping_mod(m, c, train))
    change = decode_array(reply.content["arrays"]["w"], base) - base
    assert 0.0099 < np.linalg.norm(change) <= 0.01 * (1 + 1e-6)


# --- one real federation ---------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_a_bfloat16_federation_sends_half_the_bytes_and_completes(tmp_path):
    """resnet18 at 32 px, 2 clinics, 2 rounds, transfer_dtype bfloat16 on real SuperNodes:
    every model message down and every update up is about half the model's float32 size
    (computed here), the figures are finite and the checkpoints are float32."""
    from radfed.demo_data import write_clinic
    from radfed.models import create_model
    from radfed.store import Store
    from tests.federation import Federation, cli

    fed = Federation(tmp_path)
    fed.start_superlink()
    try:
        for i, prevalence in enumerate((0.35, 0.65), start=1):
            write_clinic(tmp_path / f"data-{i}", clinic_index=i, n_patients=16, prevalence=prevalence, seed=i)
            fed.start_clinic(f"clinic-{i}", tmp_path / f"data-{i}")
        spec = ExperimentSpec(
            name="bf16",
            backbone="resnet18",
            image_size=32,
            rounds=2,
            local_epochs=1,
            batch_size=8,
            min_clinics=2,
            clinic_timeout=120.0,
            val_fraction=0.35,
            seed=3,
            transfer_dtype="bfloat16",
        )
        (tmp_path / "bf16.toml").write_text(spec_to_toml(spec))
        db = f"sqlite:///{tmp_path / 'radfed.db'}"
        proc = cli(
            "server.cli",
            "run",
            str(tmp_path / "bf16.toml"),
            "--control",
            fed.control,
            "--insecure",
            "--db",
            db,
            "--checkpoints",
            str(tmp_path / "ckpt"),
            timeout=1200,
        )
        assert proc.returncode == 0, proc.stderr + fed.logs()
    finally:
        fed.close()
    entry = {e["experiment"]: e for e in Store(db).leaderboard()}["bf16"]
    assert entry["status"] == "completed"

    torch.manual_seed(spec.seed)  # the server's initial model
    state = create_model("resnet18", 2).state_dict()
    full = sum(t.numel() * t.element_size() for t in state.values())  # the model in float32
    assert full > 40e6
    headers = 256 * len(state)  # .npy headers of the tensors that stay float32, at most
    rows = [c for c in entry["clinics"] if c["server_round"] >= 1 and c["bytes_down"] is not None]
    assert sorted((c["server_round"], c["phase"]) for c in rows) == [
        (1, "train"),
        (1, "train"),
        (2, "evaluate"),
        (2, "evaluate"),
        (2, "train"),
        (2, "train"),
    ]
    for c in rows:
        assert full / 2 <= c["bytes_down"] < full / 2 * 1.01 + headers, c
        if c["phase"] == "train":
            assert full / 2 <= c["bytes_up"] < full / 2 * 1.01 + headers, c
    rounds = {r["server_round"]: r for r in entry["rounds"]}
    for r, messages in ((1, 2), (2, 4)):  # round 2 ends with the final evaluate broadcast
        assert 0.49 < rounds[r]["bytes_down"] / (messages * full) < 0.51, rounds[r]
        assert 0.49 < rounds[r]["bytes_up"] / (2 * full) < 0.51, rounds[r]
        assert math.isfinite(rounds[r]["val_auroc"]) and math.isfinite(rounds[r]["train_loss"])
    assert math.isfinite(entry["final_auroc"])
    final = torch.load(entry["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    assert list(final) == list(state)
    assert all(final[k].dtype == torch.float32 for k in state if state[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert not torch.equal(final["net.fc.weight"], state["net.fc.weight"])
