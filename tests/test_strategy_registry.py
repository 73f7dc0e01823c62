"""Strategy names, parameters and the update guards, without a federation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from strategies import REGISTRY, StrategyError, build_strategy, check_strategy
from strategies.utils import norm_outliers, update_problem
from radfed.spec import ExperimentSpec
from tests.federation import cli


def _record(**arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


GLOBAL = _record(w=np.zeros((2, 2), np.float32), steps=np.array(3, dtype=np.int64))


def test_every_registered_strategy_builds_with_defaults():
    for name in REGISTRY:
        strategy = build_strategy(ExperimentSpec(name="x", strategy=name, min_clinics=3), None, [])
        assert strategy.min_accept == 3 and strategy.final_round == 3


@pytest.mark.parametrize("name, params, needle", [
    ("fedbest", {}, "allowed: fedavg"),
    ("fedadam", {"lr": 0.1}, "allowed: eta"),
    ("fedtrimmedavg", {"beta": "x"}, "non-negative number"),
    ("krum", {"num_malicious_nodes": 1.5}, "non-negative integer"),
])
def test_bad_names_and_parameters_are_refused_in_one_line(name, params, needle):
    with pytest.raises(StrategyError, match=needle) as info:
        check_strategy(name, params)
    assert "\n" not in str(info.value)


def test_defaults_are_filled_in():
    assert check_strategy("fedprox", {}) == {"proximal_mu": 0.01, "norm_factor": 10.0}


def test_update_checks():
    ok, norm = update_problem(_record(w=np.ones((2, 2), np.float32), steps=np.array(4)), GLOBAL)
    assert ok == "" and norm == pytest.approx(2.0)
    nan = np.ones((2, 2), np.float32)
    nan[0, 0] = np.nan
    assert "non-finite" in update_problem(_record(w=nan, steps=np.array(4)), GLOBAL)[0]
    assert "shape" in update_problem(_record(w=np.ones(4, np.float32), steps=np.array(4)), GLOBAL)[0]
    assert "keys" in update_problem(_record(w=np.ones((2, 2), np.float32)), GLOBAL)[0]


def test_norm_outliers_need_three_clinics():
    assert norm_outliers({"a": 1.0, "b": 500.0}, 10) == {}
    flagged = norm_outliers({"a": 1.0, "b": 1.2, "c": 0.9, "d": 150.0}, 10)
    assert list(flagged) == ["d"] and "median" in flagged["d"]


def test_coordinator_strategies_json_lists_every_strategy():
    rows = json.loads(cli("server.cli", "strategies", "--json", timeout=60).stdout)
    assert [r["name"] for r in rows] == list(REGISTRY)
    assert rows[[r["name"] for r in rows].index("fedprox")]["params"]["proximal_mu"]["default"] == 0.01
