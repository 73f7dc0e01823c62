"""Privacy modes: differential privacy (Flower's wrappers, the clinic's mod) and SecAgg+ messages.

Aggregation runs on real Flower messages; the only stand-in is a grid that lists node ids
(all that `configure_train` asks of it), since a SuperLink adds nothing to what is tested.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from flwr.supercore.task_identity import TaskIdentity

from radfed.spec import ExperimentSpec, SpecError, from_mapping
from strategies import NoClinicResult, StrategyError, build_strategy, check_privacy

GLOBAL = {
    "w": np.zeros(4, np.float32),
    "frozen": np.ones(2, np.float32),
    "bn.running_var": np.ones(3, np.float32),
    "bn.num_batches_tracked": np.array(0, np.int64),
}


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """Messages need the sending task's identity, as inside a ServerApp."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class NodeList:
    """The part of a Grid that `configure_train` uses."""

    def __init__(self, *nodes: int) -> None:
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


class Recorder:
    """Collects what a strategy reports (the server's RunRecorder writes it to SQL)."""

    def __init__(self) -> None:
        self.replies: list = []

    def clinic_replies(self, server_round, phase, replies):
        self.replies += replies

    def round_metrics(self, server_round, phase, metrics, replies):
        pass

    def excluded(self, server_round, reply, reason):
        pass

    def late(self, server_round, node_id):
        pass

    def sent(self, server_round, phase, bytes_by_node):
        pass

    def roll_call(self, server_round, online):
        pass


def _record(arrays: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def _strategy(mode: str, recorder: Recorder | None = None, **params):
    spec = ExperimentSpec(name="dp", min_clinics=2, privacy={"mode": mode, **params})
    return build_strategy(spec, recorder or Recorder(), trainable_keys={"w", "bn.weight"})


def _replies(messages: list[Message], deltas: list[np.ndarray]) -> list[Message]:
    """Clinic replies: the trained weight moved by `delta`, buffers changed locally."""
    out = []
    for msg, delta in zip(messages, deltas):
        local = dict(
            GLOBAL,
            w=GLOBAL["w"] + delta,
            **{"bn.running_var": np.full(3, 5.0, np.float32), "bn.num_batches_tracked": np.array(16)},
        )
        out.append(
            Message(
                RecordDict(
                    {"arrays": _record(local), "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.5})}
                ),
                reply_to=msg,
            )
        )
    return out


def test_modes_and_parameters_are_checked_in_one_line():
    for table, needle in (
        ({"mode": "local"}, "allowed: none, server-fixed"),
        ({"mode": "client-fixed", "epsilon": 1}, "allowed: noise_multiplier"),
        ({"mode": "server-fixed", "clipping_norm": "big"}, "non-negative number"),
        ({"mode": "server-fixed", "clipping_norm": 0}, "clipping norm"),
        ({"mode": "client-adaptive", "noise_multiplier": 1.0}, "clipped_count_stddev"),
    ):
        with pytest.raises(StrategyError, match=needle) as info:
            check_privacy(table, min_clinics=2)
        assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="privacy"):
        from_mapping({"name": "x", "privacy": {"mode": "client-fixed", "x": [1]}})


def test_defaults_are_resolved_for_the_record():
    assert check_privacy({}, 3) == {"mode": "none"}
    assert check_privacy({"mode": "client-fixed", "noise_multiplier": 0.5}, 3) == {
        "mode": "client-fixed",
        "noise_multiplier": 0.5,
        "clipping_norm": 1.0,
        "num_sampled_clients": 3,
    }


def test_wrappers_are_flowers_around_the_guarded_strategy():
    outer = _strategy("server-fixed", noise_multiplier=0.1)
    assert isinstance(outer, DifferentialPrivacyServerSideFixedClipping)
    assert type(outer.strategy).__name__ == "RadfedFedAvg" and outer.num_sampled_clients == 2
    outer = _strategy("client-adaptive", noise_multiplier=0.0)
    assert isinstance(outer, DifferentialPrivacyClientSideAdaptiveClipping)
    spec = ExperimentSpec(name="dp", strategy="fedbn", privacy={"mode": "server-fixed"})
    fedbn = build_strategy(spec, Recorder(), bn_keys=["bn.weight"], trainable_keys={"w", "bn.weight"})
    assert fedbn.shared_keys == {"w"}  # FedBN's BatchNorm stays at the clinics, out of DP


def test_server_side_clipping_bounds_updates_and_leaves_buffers_and_frozen_alone():
    recorder = Recorder()
    strategy = _strategy("server-fixed", recorder, noise_multiplier=0.0, clipping_norm=0.5)
    config = ConfigRecord()
    messages = list(strategy.configure_train(1, _record(GLOBAL), config, NodeList(11, 12)))
    assert config["local-stats"] is True and "clipping_norm" not in config
    big, small = np.array([3.0, 4.0, 0, 0], np.float32), np.array([0, 0, 0.1, 0], np.float32)
    arrays, _ = strategy.aggregate_train(1, _replies(messages, [big, small]))
    # big (norm 5) is clipped to norm 0.5 before the mean; small passes unchanged
    np.testing.assert_allclose(arrays["w"].numpy(), (big * 0.1 + small) / 2, rtol=1e-6)
    for key in ("frozen", "bn.running_var", "bn.num_batches_tracked"):
        assert np.array_equal(arrays[key].numpy(), GLOBAL[key]) and arrays[key].numpy().dtype == GLOBAL[key].dtype
    assert sorted(r.node_id for r in recorder.replies) == ["11", "12"]


def test_noise_lands_on_trained_parameters_only():
    strategy = _strategy("server-fixed", noise_multiplier=1.0, clipping_norm=1.0)
    messages = list(strategy.configure_train(1, _record(GLOBAL), ConfigRecord(), NodeList(11, 12)))
    arrays, _ = strategy.aggregate_train(1, _replies(messages, [np.full(4, 0.1, np.float32)] * 2))
    assert not np.allclose(arrays["w"].numpy(), 0.1, atol=1e-3)  # the noiseless mean is 0.1
    assert np.array_equal(arrays["bn.running_var"].numpy(), GLOBAL["bn.running_var"])


def test_client_side_mode_asks_clinics_to_clip_and_a_failed_clinic_stops_the_round():
    strategy = _strategy("client-fixed", noise_multiplier=0.0, clipping_norm=0.5)
    config = ConfigRecord()
    messages = list(strategy.configure_train(1, _record(GLOBAL), config, NodeList(11, 12)))
    assert config["clipping_norm"] == 0.5 and config["dp-clipping"] == "fixed"
    from flwr.app import Error

    replies = _replies(messages[:1], [np.full(4, 0.1, np.float32)]) + [
        Message(Error(code=0, reason="ClientApp failed at the clinic"), reply_to=messages[1])
    ]
    with pytest.raises(NoClinicResult, match="every clinic replies"):
        strategy.aggregate_train(1, replies)


def test_clinic_mod_clips_only_when_asked():
    from client_node.app import clipping_mod

    received = _record(GLOBAL)

    def train(msg, context):
        update = dict(GLOBAL, w=np.array([3.0, 4.0, 0, 0], np.float32))
        return Message(
            RecordDict({"arrays": _record(update), "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg
        )

    context = Context(run_id=1, node_id=11, node_config={}, state=RecordDict(), run_config={})
    for config, norm in (
        ({}, 5.0),
        ({"clipping_norm": 1.0}, 1.0),
        ({"clipping_norm": 1.0, "dp-clipping": "adaptive"}, 1.0),
    ):
        msg = Message(
            RecordDict({"arrays": received, "config": ConfigRecord(config)}),
            dst_node_id=11,
            message_type=MessageType.TRAIN,
        )
        reply = clipping_mod(msg, context, train)
        assert not reply.has_error(), reply.error
        assert np.linalg.norm(reply.content["arrays"]["w"].numpy()) == pytest.approx(norm, rel=1e-5)
        assert ("norm_bit" in reply.content["metrics"]) == (config.get("dp-clipping") == "adaptive")


def test_secure_aggregation_needs_fedavg_and_three_clinics():
    assert check_privacy({"mode": "secagg+"}, 3)["num_shares"] == 3
    for min_clinics, strategy, needle in ((2, "fedavg", "min_clinics >= 3"), (3, "fedmedian", "fedavg only")):
        with pytest.raises(StrategyError, match=needle):
            check_privacy({"mode": "secagg+"}, min_clinics, strategy)
    with pytest.raises(StrategyError, match="reconstruction_threshold"):
        check_privacy({"mode": "secagg+", "reconstruction_threshold": 5}, 3)


def test_legacy_messages_reach_the_handlers_keyed_and_return_as_fitres():
    """SecAgg+ speaks Flower's legacy FitIns/FitRes; radfed's handlers never see it."""
    import json

    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

    from client_node.legacy import KEYS_CONFIG, legacy_format_mod
    from strategies.secagg import KEYS_CONFIG as SERVER_KEYS

    assert KEYS_CONFIG == SERVER_KEYS
    keys = list(GLOBAL)
    fitins = FitIns(ndarrays_to_parameters([GLOBAL[k] for k in keys]), {"spec": "{}", KEYS_CONFIG: json.dumps(keys)})
    msg = Message(compat.fitins_to_recorddict(fitins, True), dst_node_id=11, message_type=MessageType.TRAIN)
    seen = {}

    def train(msg, context):
        seen.update(arrays=msg.content["arrays"], config=msg.content["config"])
        update = dict(GLOBAL, w=np.ones(4, np.float32))
        return Message(
            RecordDict(
                {
                    "arrays": _record(dict(reversed(list(update.items())))),
                    "metrics": MetricRecord({"num-examples": 7, "train_loss": 0.5, "val_hist_pos": [1.0, 2.0]}),
                    "clinic": ConfigRecord({"name": "clinic-a", "device": "cpu"}),
                }
            ),
            reply_to=msg,
        )

    context = Context(run_id=1, node_id=11, node_config={}, state=RecordDict(), run_config={})
    reply = legacy_format_mod(msg, context, train)
    assert list(seen["arrays"].keys()) == keys and KEYS_CONFIG not in seen["config"]
    fitres = compat.recorddict_to_fitres(reply.content, True)
    assert fitres.num_examples == 7 and fitres.metrics["clinic-name"] == "clinic-a"
    assert "val_hist_pos" not in fitres.metrics  # legacy results hold scalars only
    returned = parameters_to_ndarrays(fitres.parameters)  # in the server's key order
    np.testing.assert_array_equal(returned[keys.index("w")], np.ones(4, np.float32))
    untouched = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=11, message_type=MessageType.TRAIN)
    assert legacy_format_mod(untouched, context, lambda m, c: "called") == "called"


def test_secure_round_records_each_clinic_and_keeps_fixed_entries():
    """What the SecAgg+ workflow hands the strategy: every FitRes carries the same sum."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    from strategies.secagg import secure_strategy

    recorder, keys = Recorder(), list(GLOBAL)
    strategy = secure_strategy(recorder, keys, _record(GLOBAL), {"w"}, rounds=1, min_clinics=3, config={"spec": "{}"})
    summed = dict(
        GLOBAL, w=np.full(4, 0.5, np.float32), **{"bn.running_var": np.full(3, 1.0000001, np.float32)}
    )  # quantisation error
    parameters = ndarrays_to_parameters([summed[k] for k in keys])
    results = [
        (
            GridClientProxy(node, None, 1),
            FitRes(Status(Code.OK, ""), parameters, 10 * node, {"train_loss": 0.5, "clinic-name": f"c{node}"}),
        )
        for node in (1, 2, 3)
    ]
    aggregated, metrics = strategy.aggregate_fit(1, results, [])
    arrays = dict(zip(keys, parameters_to_ndarrays(aggregated)))
    np.testing.assert_array_equal(arrays["w"], summed["w"])
    assert np.array_equal(arrays["bn.running_var"], GLOBAL["bn.running_var"])
    assert [r.clinic for r in recorder.replies] == ["c1", "c2", "c3"] and metrics["train_loss"] == 0.5
    with pytest.raises(NoClinicResult, match="every sampled clinic"):
        strategy.aggregate_fit(2, results[:2], [BaseException("lost")])
