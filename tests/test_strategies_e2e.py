"""Strategy families on real SuperNodes (tiny model): they complete and learn, FedBN keeps
BatchNorm at the clinics, and faulty updates are excluded or bounded.

One federation serves every run of this module, to keep the suite's time down.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from radfed.demo_data import write_clinic
from radfed.spec import ExperimentSpec, spec_to_toml
from radfed.store import Store
from tests.federation import Federation, cli

pytestmark = pytest.mark.e2e

HONEST = 2


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    work = tmp_path_factory.mktemp("strategies")
    federation = Federation(work)
    federation.start_superlink()
    for i, prevalence in enumerate((0.35, 0.65), start=1):
        write_clinic(work / f"data-{i}", clinic_index=i, n_patients=32, prevalence=prevalence, seed=i)
        federation.start_clinic(f"clinic-{i}", work / f"data-{i}")
    try:
        yield federation
    finally:
        federation.close()


def _submit(fed: Federation, name: str, *args: str, **spec):
    base = dict(
        name=name,
        backbone="resnet18",
        image_size=64,
        rounds=1,
        local_epochs=2,
        batch_size=8,
        learning_rate=1e-3,
        min_clinics=HONEST,
        clinic_timeout=120.0,
        val_fraction=0.35,
        seed=3,
    )
    base.update(spec)
    path = fed.work / f"{name}.toml"
    path.write_text(spec_to_toml(ExperimentSpec(**base)))
    return cli(
        "server.cli",
        "run",
        str(path),
        "--control",
        fed.control,
        "--insecure",
        "--db",
        _db(fed),
        "--checkpoints",
        str(fed.work / "ckpt"),
        *args,
    )


def _db(fed: Federation) -> str:
    return f"sqlite:///{fed.work / 'radfed.db'}"


def _run(fed: Federation, name: str, *args: str, **spec) -> dict:
    proc = _submit(fed, name, *args, **spec)
    assert proc.returncode == 0, proc.stderr + fed.logs()
    return {e["experiment"]: e for e in Store(_db(fed)).leaderboard()}[name]


def _auroc(entry: dict, server_round: int) -> float:
    return next(r["val_auroc"] for r in entry["rounds"] if r["server_round"] == server_round)


@pytest.mark.timeout(450)
@pytest.mark.parametrize(
    "strategy, params",
    [
        ("fedadam", {"eta": 0.01}),
        ("fedbn", {}),
    ],
)
def test_strategy_family_completes_and_improves(fed, strategy, params):
    entry = _run(fed, f"family-{strategy}", strategy=strategy, strategy_params=params)
    assert entry["status"] == "completed"
    assert {r["server_round"] for r in entry["rounds"]} == {0, 1}
    if strategy == "fedbn":
        assert entry["clinic_mean_auroc"] > _auroc(entry, 0) + 0.05, entry["rounds"]
        _assert_bn_stays_local(fed, entry)
    else:  # one server-optimiser step on 2 small clinics: its AUROC is noise; check the step
        _assert_statistics_averaged(entry)


def _assert_statistics_averaged(entry: dict) -> None:
    """A server optimiser moved the weights and took the clinics' BatchNorm statistics
    (Flower's FedAdam alone would leave them within ~eta of their initial values)."""
    from radfed.models import create_model

    torch.manual_seed(3)  # the spec's seed: the server's initial model
    initial = create_model("resnet18", 2).state_dict()
    final = torch.load(entry["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    assert (final["net.bn1.running_var"] - initial["net.bn1.running_var"]).abs().max() > 0.1
    assert final["net.bn1.num_batches_tracked"] > 0
    assert not torch.equal(final["net.fc.weight"], initial["net.fc.weight"])


def _assert_bn_stays_local(fed: Federation, entry: dict) -> None:
    from radfed.batchnorm import batchnorm_state_keys
    from radfed.models import create_model

    states = [
        torch.load(p, weights_only=True)
        for p in sorted((fed.work / "nodes").glob("*/state/local/run-*.pt"))
        if str(entry["flwr_run_id"]) in p.name
    ]
    assert len(states) == HONEST
    key = next(k for k in batchnorm_state_keys(create_model("resnet18", 2)) if k.endswith("running_mean"))
    assert not torch.allclose(states[0][key], states[1][key])
    final = torch.load(entry["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    initial = create_model("resnet18", 2).state_dict()
    assert torch.equal(final[key], initial[key])  # the server never averaged BatchNorm
    assert not torch.equal(final["net.fc.weight"], initial["net.fc.weight"])


@pytest.mark.timeout(300)
def test_client_side_clipping_bounds_the_round_and_is_recorded(fed):
    """Differential privacy with clipping at the clinics (Flower's fixedclipping_mod).

    Runs before the faulty clinics join the module's federation.

    Noise 0 so the bound can be checked exactly: the global model moves by at most the
    clipping norm, BatchNorm statistics stay at the clinics, and the run records the
    settings it used.
    """
    from radfed.models import create_model

    privacy = {"mode": "client-fixed", "noise_multiplier": 0.0, "clipping_norm": 0.5}
    entry = _run(fed, "dp-client-fixed", strategy="fedavg", privacy=privacy, local_epochs=1)
    assert entry["status"] == "completed", entry["error"]
    assert entry["privacy"] == {**privacy, "num_sampled_clients": HONEST}
    assert {c["clinic"] for c in entry["clinics"] if c["phase"] == "train"} == {"clinic-1", "clinic-2"}
    torch.manual_seed(3)  # the spec's seed: the server's initial model
    model = create_model("resnet18", 2)
    initial = model.state_dict()
    final = torch.load(entry["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    params = [name for name, _ in model.named_parameters()]
    moved = torch.sqrt(sum(((final[k] - initial[k]) ** 2).sum() for k in params))
    assert 0.05 < moved <= 0.5 + 1e-4, moved
    clinic_logs = [p.read_text(errors="replace") for p in (fed.work / "logs").glob("clinic-[12].log")]
    assert all("fixedclipping_mod: parameters are clipped" in text for text in clinic_logs)
    for name, _ in model.named_buffers():
        if name in initial:
            assert torch.equal(final[name].to(initial[name].dtype), initial[name]), name
    local = [
        torch.load(p, weights_only=True)
        for p in (fed.work / "nodes").glob(f"*/state/local/run-{entry['flwr_run_id']}.pt")
    ]
    assert len(local) == HONEST
    key = "net.bn1.running_var"
    assert all(not torch.equal(state[key], initial[key]) for state in local)


@pytest.mark.timeout(450)
def test_leave_one_clinic_out_with_quality_figures_and_centralised_baseline(fed):
    """clinic-2 held out: it never trains, its row carries the final model's figures at the
    federation's pooled threshold; the centralised baseline of the same budget gives the ratio."""
    proc = _submit(fed, "holdout", "--holdout", "clinic-2", strategy="fedavg", min_clinics=1, local_epochs=1)
    assert proc.returncode == 0, proc.stderr + fed.logs()
    assert "held-out clinic (never trained on): clinic-2 0." in proc.stderr
    assert "pooled AUROC 0." in proc.stderr and "clinic mean AUROC" in proc.stderr
    entry = {e["experiment"]: e for e in Store(_db(fed)).leaderboard()}["holdout"]
    assert entry["status"] == "completed" and entry["holdout"] == "clinic-2"
    assert {c["clinic"] for c in entry["clinics"] if c["phase"] != "holdout"} == {"clinic-1"}
    [held] = [c for c in entry["clinics"] if c["phase"] == "holdout"]
    assert held["clinic"] == "clinic-2" and held["server_round"] == 1 and held["num_examples"] > 0
    quality = held["quality"]
    assert 0 <= quality["auroc_low"] <= held["auroc"] <= quality["auroc_high"] <= 1
    assert quality["threshold"] == pytest.approx(entry["pooled"]["threshold"])  # not its own choice
    final = [c for c in entry["clinics"] if c["phase"] == "evaluate" and c["server_round"] == 1]
    assert final and final[0]["quality"]["patients"] > 0 and final[0]["quality"]["ece"] is not None
    pooled = entry["pooled"]
    assert pooled["auroc"] == final[0]["auroc"]  # one clinic: the same scores, the same figure
    assert pooled["threshold_logit"] == final[0]["quality"]["threshold_logit"]
    # the pooled CI from the clinic's resampled histograms: one clinic, so near its own CI
    assert pooled["auroc_low"] <= pooled["auroc"] <= pooled["auroc_high"]
    assert pooled["auroc_low"] == pytest.approx(final[0]["quality"]["auroc_low"], abs=0.06)
    assert pooled["auroc_high"] == pytest.approx(final[0]["quality"]["auroc_high"], abs=0.06)
    board = cli("server.cli", "leaderboard", "--db", _db(fed), env={**os.environ, "COLUMNS": "400"})
    assert f"{pooled['auroc']:.3f} [{pooled['auroc_low']:.3f}–{pooled['auroc_high']:.3f}]" in board.stdout

    proc = cli(
        "server.cli",
        "baseline",
        str(fed.work / "holdout.toml"),
        "--holdout",
        "clinic-2",
        "--data",
        f"clinic-1={fed.work / 'data-1'}",
        "--data",
        f"clinic-2={fed.work / 'data-2'}",
        "--db",
        _db(fed),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    central = json.loads(proc.stdout.splitlines()[-1])
    assert set(central["clinics"]) == {"clinic-1", "clinic-2"}
    assert central["clinics"]["clinic-2"]["threshold"] == central["pooled"]["threshold"]
    entry = {e["experiment"]: e for e in Store(_db(fed)).leaderboard()}["holdout"]
    assert entry["baseline"]["auroc"] == central["pooled"]["auroc"]
    assert entry["vs_central"] == pytest.approx(entry["pooled"]["auroc"] / central["pooled"]["auroc"])


@pytest.mark.timeout(450)
def test_early_stopping_keeps_the_best_round_and_stops_when_it_stops_improving(fed):
    """patience = 1 with a learning rate too small to change the ranking: the pooled AUROC
    stops improving after round 1, so round 3 (when round 2's figures arrive) is the last;
    its model is still evaluated, nothing after it is trained or checkpointed, and the
    selected checkpoint is the best round's."""
    proc = _submit(fed, "early-stop", rounds=6, local_epochs=1, learning_rate=1e-8, patience=1)
    assert proc.returncode == 0, proc.stderr + fed.logs()
    assert "stopped early after round 3" in " ".join(proc.stderr.split())
    entry = {e["experiment"]: e for e in Store(_db(fed)).leaderboard()}["early-stop"]
    assert entry["status"] == "completed" and entry["stopped_early"].startswith("stopped early after round 3")
    assert [r["server_round"] for r in entry["rounds"]] == [0, 1, 2, 3]
    assert [c["server_round"] for c in entry["checkpoints"]] == [1, 2, 3]
    pooled = {r["server_round"]: r["pooled"]["auroc"] for r in entry["rounds"]}
    assert pooled[2] <= pooled[1]  # why it stopped
    best = max(pooled[r] for r in (1, 2, 3))
    assert entry["selected"]["round"] == min(r for r in (1, 2, 3) if pooled[r] == best)
    assert entry["pooled_auroc"] == pooled[3] and entry["final_auroc"] == pooled[3]
    trained = {c["server_round"] for c in entry["clinics"] if c["phase"] == "train"}
    assert trained == {1, 2, 3}


def test_sweep_head_only_rounds_send_only_the_head(fed):
    """A one-scenario `coordinator sweep` (freeze all): the backbone travels once per
    clinic (with round 1's train message), every later message carries only the head
    (the final evaluate broadcast, and every reply); features are cached at the clinics;
    checkpoints hold the whole model; bytes per round and per clinic are recorded."""
    from radfed.models import create_model
    from radfed.results import summary

    seed = 3
    task = fed.work / "sweep-task.toml"
    task.write_text(
        '[sweep]\nname = "tiny-sweep"\n[sweep.weights.radimagenet]\nresnet18 = "random"\n'
        "[experiment]\n"
        + "\n".join(
            f"{k} = {v}"
            for k, v in dict(
                labels='["normal", "opacity"]',
                image_size=64,
                rounds=1,
                local_epochs=2,
                batch_size=8,
                min_clinics=HONEST,
                clinic_timeout=120.0,
                val_fraction=0.35,
                seed=seed,
            ).items()
        )
        + "\n"
    )
    db = f"sqlite:///{fed.work / 'radfed.db'}"
    proc = cli(
        "server.cli",
        "sweep",
        str(task),
        "--backbones",
        "resnet18",
        "--freeze",
        "all",
        "--limit",
        "1",
        "--control",
        fed.control,
        "--insecure",
        "--db",
        db,
        "--checkpoints",
        str(fed.work / "ckpt"),
    )
    assert proc.returncode == 0, proc.stderr + fed.logs()
    board = Store(db).leaderboard()
    entry = next(e for e in board if e["sweep"] == "tiny-sweep")
    assert entry["status"] == "completed" and entry["weight_source"] == "radimagenet"
    assert [(g["backbone"], g["runs"], g["scored"]) for g in summary(board, "tiny-sweep")] == [("resnet18", 1, 1)]

    torch.manual_seed(seed)
    initial = create_model("resnet18", 2).state_dict()
    full = sum(t.numel() * t.element_size() for t in initial.values())
    head = sum(initial[k].numel() * initial[k].element_size() for k in ("net.fc.weight", "net.fc.bias"))
    small = head + 1024  # the head plus serialisation headers
    (round1,) = [r for r in entry["rounds"] if r["server_round"] == 1]
    assert HONEST * full <= round1["bytes_down"] < HONEST * full * 1.01
    assert round1["bytes_up"] < HONEST * small and round1["duration_s"] > 0
    rows = [c for c in entry["clinics"] if c["server_round"] == 1 and c["bytes_down"] is not None]
    assert sorted(c["phase"] for c in rows) == ["evaluate"] * HONEST + ["train"] * HONEST
    for c in rows:  # the backbone only in the first message; replies: the head or nothing
        assert (full <= c["bytes_down"] < full * 1.01) if c["phase"] == "train" else (c["bytes_down"] < small)
        assert (0 < c["bytes_up"] < small) if c["phase"] == "train" else c["bytes_up"] == 0

    final = torch.load(entry["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    assert list(final) == list(initial)  # the whole model, in the model's key order
    assert torch.equal(final["net.conv1.weight"], initial["net.conv1.weight"])
    assert not torch.equal(final["net.fc.weight"], initial["net.fc.weight"])
    nodes = fed.work / "nodes"
    assert len(list(nodes.glob("*/cache/features/*.feats"))) == HONEST
    assert len(list(nodes.glob("*/state/backbones/*.pt"))) == HONEST


@pytest.mark.timeout(600)
def test_faulty_clinics_are_excluded_or_bounded(fed):
    """FedMedian with a NaN clinic (excluded by the guards) and a x100 clinic (let through to
    FedMedian, which must bound it): the run still learns, as the clean family runs do,
    and the global weights keep their scale (a x100 update averaged in would not)."""
    from radfed.models import create_model

    for name, fault in (("faulty-nan", "nan"), ("faulty-x100", "scale")):
        write_clinic(fed.work / f"data-{name}", clinic_index=0, n_patients=12, prevalence=0.5, seed=9)
        fed.start_clinic(name, fed.work / f"data-{name}", fault=fault)
    # norm_factor disabled: the x100 update reaches FedMedian, which must bound it itself.
    faulty = _run(
        fed,
        "robust-fedmedian",
        strategy="fedmedian",
        min_clinics=HONEST + 2,
        min_accept=HONEST + 1,
        strategy_params={"norm_factor": 1e9},
    )
    excluded = [c for c in faulty["clinics"] if c["phase"] == "excluded"]
    assert {c["clinic"] for c in excluded} == {"faulty-nan"}
    assert all("non-finite" in c["note"] for c in excluded)
    assert "faulty-x100" in {c["clinic"] for c in faulty["clinics"] if c["phase"] == "train"}
    assert faulty["final_auroc"] > _auroc(faulty, 0) + 0.05, faulty["rounds"]
    torch.manual_seed(3)  # the spec's seed: the server's initial model
    model = create_model("resnet18", 2)
    initial = model.state_dict()
    final = torch.load(faulty["checkpoints"][-1]["path"], weights_only=True)["state_dict"]
    params = [name for name, _ in model.named_parameters()]  # BatchNorm statistics may grow honestly
    norm = lambda state: torch.sqrt(sum((state[k].double() ** 2).sum() for k in params))  # noqa: E731
    assert norm(final) < 2 * norm(initial), (norm(final), norm(initial))
