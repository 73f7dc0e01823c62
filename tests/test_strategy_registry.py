"""Strategy names, parameters and the update guards, without a federation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from radfed.spec import ExperimentSpec
from strategies import REGISTRY, StrategyError, build_strategy, check_strategy
from strategies.utils import norm_outliers, screen_updates, weighted_mean
from tests.federation import cli


def _record(**arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


GLOBAL = _record(w=np.zeros((2, 2), np.float32), steps=np.array(3, dtype=np.int64))


def test_every_registered_strategy_builds_with_defaults():
    for name in REGISTRY:
        strategy = build_strategy(ExperimentSpec(name="x", strategy=name, min_clinics=3), None, [])
        assert strategy.min_accept == 3 and strategy.final_round == 3


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("fedbest", {}, "allowed: fedavg"),
        ("fedadam", {"lr": 0.1}, "allowed: eta"),
        ("fedtrimmedavg", {"beta": "x"}, "non-negative number"),
        ("krum", {"num_malicious_nodes": 1.5}, "non-negative integer"),
    ],
)
def test_bad_names_and_parameters_are_refused_in_one_line(name, params, needle):
    with pytest.raises(StrategyError, match=needle) as info:
        check_strategy(name, params)
    assert "\n" not in str(info.value)


def test_defaults_are_filled_in():
    assert check_strategy("fedprox", {}) == {"proximal_mu": 0.01, "norm_factor": 10.0}


def test_update_checks():
    nan = np.ones((2, 2), np.float32)
    nan[0, 0] = np.nan
    updates = {
        "ok": _record(w=np.ones((2, 2), np.float32), steps=np.array(4)),
        "nan": _record(w=nan, steps=np.array(4)),
        "shape": _record(w=np.ones(4, np.float32), steps=np.array(4)),
        "keys": _record(w=np.ones((2, 2), np.float32)),
        "none": None,
    }
    problems, norms = screen_updates(updates, GLOBAL)
    assert norms == {"ok": pytest.approx(2.0)}
    assert "non-finite" in problems["nan"] and "shape" in problems["shape"]
    assert "keys" in problems["keys"] and "no weights" in problems["none"]


def test_norm_outliers_need_three_clinics():
    assert norm_outliers({"a": 1.0, "b": 500.0}, 10) == {}
    flagged = norm_outliers({"a": 1.0, "b": 1.2, "c": 0.9, "d": 150.0}, 10)
    assert list(flagged) == ["d"] and "median" in flagged["d"]


@pytest.mark.e2e
def test_coordinator_strategies_json_lists_every_strategy():
    listed = json.loads(cli("server.cli", "strategies", "--json", timeout=60).stdout)
    rows = listed["strategies"]
    assert [r["name"] for r in rows] == list(REGISTRY)
    assert rows[[r["name"] for r in rows].index("fedprox")]["params"]["proximal_mu"]["default"] == 0.01
    modes = {m["mode"]: m for m in listed["privacy"]}
    assert modes["client-fixed"]["flower_class"] == "DifferentialPrivacyClientSideFixedClipping"
    assert set(modes) == {"none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive", "secagg+"}
    assert modes["secagg+"]["flower_class"] == "SecAggPlusWorkflow"


def test_array_views_read_what_flower_wrote():
    from strategies.utils import array_view

    for value in (
        np.float16(3).reshape(()),
        np.zeros((0, 3), np.float32),
        np.array([True, False]),
        np.arange(6, dtype=np.int64).reshape(2, 3).T,
        np.ones((2, 3), ">f4"),
    ):
        view = array_view(Array(np.asarray(value)))
        assert view.dtype == value.dtype and view.shape == value.shape
        np.testing.assert_array_equal(view, value)


def test_weighted_mean_matches_flowers_aggregation():
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    rng = np.random.default_rng(0)
    contents = [
        RecordDict(
            {
                "arrays": _record(w=rng.standard_normal((3, 4)).astype(np.float32), steps=np.array(i, dtype=np.int64)),
                "metrics": MetricRecord({"num-examples": 10 * (i + 1)}),
            }
        )
        for i in range(3)
    ]
    ours, flowers = weighted_mean(contents, "num-examples"), aggregate_arrayrecords(contents, "num-examples")
    for key in ("w", "steps"):
        np.testing.assert_allclose(ours[key].numpy(), flowers[key].numpy(), rtol=1e-6)


class _Grid:
    """Just enough of a Grid for configure_train: four connected nodes."""

    def get_node_ids(self):
        return [11, 12, 13, 14]


class _Recorder:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.fixture
def server_process(monkeypatch):
    """The identity a ServerApp process has, so that strategies can build messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _replies(strategy, start: ArrayRecord, updates: list[dict], examples: list[int]):
    """One train reply per clinic to the strategy's configure_train messages."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    sent = list(strategy.configure_train(1, start, ConfigRecord(), _Grid()))
    return [
        Message(
            RecordDict(
                {
                    "arrays": _record(**update),
                    "metrics": MetricRecord({"num-examples": n}),
                    "clinic": ConfigRecord({"name": f"clinic-{i}"}),
                }
            ),
            reply_to=m,
        )
        for i, (m, update, n) in enumerate(zip(sent, updates, examples))
    ]


def test_aggregation_does_not_depend_on_arrival_order(server_process):
    """Float sums depend on their order; replies are summed in clinic order, so the same
    seed gives the same global model whichever clinic answered first."""
    from flwr.app import ConfigRecord

    rng = np.random.default_rng(0)
    start = _record(w=np.zeros(5000, np.float32))
    strategy = build_strategy(ExperimentSpec(name="x", strategy="fedavg", min_clinics=4), _Recorder(), [])
    updates = [{"w": (rng.standard_normal(5000) * 10 ** rng.uniform(-3, 3, 5000)).astype(np.float32)} for _ in range(4)]
    replies = _replies(strategy, start, updates, [7, 10, 13, 16])
    orders = ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0])
    results = []
    for order in orders:
        strategy.configure_train(1, start, ConfigRecord(), _Grid())
        arrays, _ = strategy.aggregate_train(1, [replies[i] for i in order])
        results.append(arrays["w"].numpy())
    assert all(np.array_equal(results[0], r) for r in results[1:])
    # and the order does matter to a plain sum: without sorting the runs would drift
    sums = [sum(updates[i]["w"] for i in order) for order in orders]
    assert not all(np.array_equal(sums[0], s) for s in sums[1:])


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_server_optimisers_average_batchnorm_statistics(server_process, name):
    """FedAdam & co. step the parameters, but BatchNorm running statistics take the
    clinics' weighted mean (an Adam step would leave them near their initial values)."""
    start = _record(w=np.zeros(4, np.float32), var=np.ones(3, np.float32), seen=np.array(0, np.int64))
    strategy = build_strategy(
        ExperimentSpec(name="x", strategy=name, min_clinics=4), _Recorder(), [], statistics_keys=["var", "seen"]
    )
    updates = [
        {
            "w": np.full(4, 0.5 * (i + 1), np.float32),
            "var": np.full(3, 10.0 * (i + 1), np.float32),
            "seen": np.array(4 * (i + 1), np.int64),
        }
        for i in range(4)
    ]
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, start, updates, [1, 1, 1, 1]))
    np.testing.assert_allclose(arrays["var"].numpy(), 25.0)
    assert arrays["seen"].numpy().dtype == np.int64 and arrays["seen"].numpy() == 10
    w = arrays["w"].numpy()
    assert np.all(w > 0) and not np.allclose(w, 1.25)  # a server-optimiser step, not the mean
