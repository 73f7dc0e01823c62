"""Aggregating 8 ResNet50-sized clinic updates: radfed's path against Flower's and numpy's.

radfed's path is what a round really runs: every update screened by the guards
(strategies.utils.screen_updates + norm_outliers), then the weighted mean
(strategies.utils.weighted_mean, used by radfed's FedAvg/FedProx/FedBN). The baselines,
measured in the same run on the same updates:
Flower's `aggregate_arrayrecords` alone, and a raw numpy weighted mean over arrays
already in memory. Peak memory is traced with tracemalloc (numpy reports its buffers
to it) and compared with the goal: model size x (clients + 2).

Run: .venv/bin/python bench/aggregate.py [--clients 8] [--repeats 3]
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from radfed.models import create_model
from strategies.utils import norm_outliers, screen_updates, weighted_mean


def make_updates(clients: int, seed: int = 0) -> tuple[ArrayRecord, list[RecordDict], int]:
    """A global ResNet50 state and `clients` perturbed copies, as Flower replies carry them."""
    state = {k: v.numpy() for k, v in create_model("resnet50", 2).state_dict().items()}
    rng = np.random.default_rng(seed)
    replies = []
    for i in range(clients):
        noisy = {
            k: (v + rng.standard_normal(v.shape).astype(v.dtype) * 0.01 if v.dtype.kind == "f" else v)
            for k, v in state.items()
        }
        replies.append(RecordDict({"arrays": _record(noisy), "metrics": MetricRecord({"num-examples": 100 + i})}))
    model_bytes = sum(v.nbytes for v in state.values())
    return _record(state), replies, model_bytes


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def radfed_path(reference: ArrayRecord, replies: list[RecordDict]) -> ArrayRecord:
    """What RadfedFedAvg does: screen every update, then the weighted mean."""
    updates = {str(i): next(iter(r.array_records.values())) for i, r in enumerate(replies)}
    bad, norms = screen_updates(updates, reference)
    bad.update(norm_outliers(norms, 10.0))
    kept = [r for i, r in enumerate(replies) if str(i) not in bad]
    return weighted_mean(kept, "num-examples")


def flower_path(_reference: ArrayRecord, replies: list[RecordDict]) -> ArrayRecord:
    return aggregate_arrayrecords(replies, "num-examples")


def numpy_mean(arrays: list[dict[str, np.ndarray]], weights: list[float]) -> dict[str, np.ndarray]:
    total = sum(weights)
    out = {k: v * (weights[0] / total) for k, v in arrays[0].items()}
    for arr, w in zip(arrays[1:], weights[1:]):
        for k, v in arr.items():
            out[k] += v * (w / total)
    return out


def measure(fn, *args, repeats: int) -> tuple[float, int]:
    """Best wall time over `repeats` and the peak traced memory of one call."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reference, replies, model_bytes = make_updates(args.clients)
    arrays = [{k: a.numpy() for k, a in next(iter(r.array_records.values())).items()} for r in replies]
    weights = [float(next(iter(r.metric_records.values()))["num-examples"]) for r in replies]
    radfed_s, radfed_peak = measure(radfed_path, reference, replies, repeats=args.repeats)
    flower_s, flower_peak = measure(flower_path, reference, replies, repeats=args.repeats)
    numpy_s, numpy_peak = measure(numpy_mean, arrays, weights, repeats=args.repeats)
    # Memory of the inputs (the clients' updates) is outside the traced call; the goal
    # counts them: peak total = updates in memory + what aggregation adds.
    inputs = model_bytes * args.clients
    budget = model_bytes * (args.clients + 2)
    result = {
        "clients": args.clients,
        "model_mb": round(model_bytes / 1e6, 1),
        "radfed_s": round(radfed_s, 3),
        "flower_s": round(flower_s, 3),
        "numpy_s": round(numpy_s, 3),
        "radfed_vs_flower": round(radfed_s / flower_s, 3),
        "radfed_vs_numpy": round(radfed_s / numpy_s, 3),
        "radfed_peak_mb": round((inputs + radfed_peak) / 1e6, 1),
        "flower_peak_mb": round((inputs + flower_peak) / 1e6, 1),
        "numpy_peak_mb": round((inputs + numpy_peak) / 1e6, 1),
        "budget_mb": round(budget / 1e6, 1),
        "goal_no_slower_than_flower": radfed_s <= flower_s,
        "goal_memory_within_budget": inputs + radfed_peak <= budget,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
