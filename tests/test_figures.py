"""A saturated, shifted model end to end: every figure radfed shows agrees, and it is flagged.

The failure seen on data radfed was not built around: a global model whose logits are
beyond 50 for every image, shifted from clinic to clinic. Float32 probabilities are then
all exactly 1.0; radfed once reported "final federated AUROC 1.000" beside "pooled AUROC
0.500 [0.50-0.50]". Here a real model's head is scaled to saturate, each clinic's figures
go the way a ClientApp sends them (Flower MetricRecord), through the strategy's reply
parsing, the RunRecorder and a real SQLite store to the leaderboard, and everything is
checked against scikit-learn on the pooled raw scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord
from sklearn.metrics import roc_auc_score

from radfed.evaluation import finding_scores
from radfed.models import create_model
from radfed.ranking import model_warnings
from radfed.reply import from_logits
from radfed.spec import ExperimentSpec
from radfed.store import Store
from radfed.training import predict_logits
from server.recorder import RunRecorder
from strategies.utils import ClinicReply, split_metrics
from tests.federation import cli


def _clinic(seed: int, n: int, brightness: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Images with a bright square for a finding; each clinic's scanner another brightness."""
    g = torch.Generator().manual_seed(seed)
    labels = np.r_[0, 1, (torch.rand(n - 2, generator=g) < 0.4).numpy().astype(int)]
    images = torch.rand(n, 3, 32, 32, generator=g) * 0.2 + brightness
    images[torch.from_numpy(labels == 1), :, 8:20, 8:20] += 0.6
    return images, labels, np.arange(n) // 2  # two images per patient


def _saturated(model: torch.nn.Module, scale: float, images: list[torch.Tensor]) -> torch.nn.Module:
    """The head scaled by `scale`, its bias shifted so every finding log-odds is beyond +55."""
    with torch.no_grad():
        model.head.weight.mul_(scale)
        model.head.bias.mul_(scale)
        low = min(float(finding_scores(predict_logits(model, x).numpy()).min()) for x in images)
        model.head.bias[1] += 55.0 - low
    return model


def _reply(name: str, logits: torch.Tensor, labels: np.ndarray, patients: np.ndarray) -> ClinicReply:
    """What the ClientApp sends, as the strategy reads it back from the Flower record."""
    sent = MetricRecord(from_logits(logits.numpy(), labels, patients, seed=0).to_metrics("num-examples"))
    metrics, lists = split_metrics([sent])
    return ClinicReply(node_id=name[-1], clinic=name, device="cpu", metrics=metrics, lists=lists)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_saturated_shifted_model_gives_consistent_figures_and_is_flagged(tmp_path):
    torch.manual_seed(0)
    clinics = {f"clinic-{i}": _clinic(i, n, b) for i, (n, b) in enumerate(((24, 0.1), (30, 0.4), (18, 0.7)), 1)}
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    store = Store(db)
    spec = ExperimentSpec(name="saturated", backbone="resnet18", image_size=32, rounds=3)
    exp = store.create_experiment(spec.name, spec.to_json(), spec.backbone, spec.weights, spec.strategy)
    run = store.start_run(exp, "7", rounds_planned=3)
    recorder = RunRecorder(store, run, spec, tmp_path / "ckpt")
    base = create_model("resnet18", 2, "random").state_dict()
    scores: dict[str, np.ndarray] = {}
    for rnd, scale in enumerate((1.0, 3.0, 10.0, 30.0)):  # more confident every round
        model = create_model("resnet18", 2, "random")
        model.load_state_dict(base)
        model = _saturated(model, scale, [c[0] for c in clinics.values()])
        replies = []
        for name, (images, labels, patients) in clinics.items():
            logits = predict_logits(model, images)
            scores[name] = finding_scores(logits.numpy())
            replies.append(_reply(name, logits, labels, patients))
        recorder.clinic_replies(rnd, "evaluate", replies)
        recorder.round_metrics(rnd, "evaluate", None, replies)
    store.finish_run(run, "completed", final_auroc=recorder.val_auroc[3])

    every = np.concatenate(list(scores.values()))
    assert every.min() > 50 and np.all(np.float32(1) / (1 + np.exp(-every.astype(np.float32))) == 1.0)
    [entry] = store.leaderboard()
    pooled = entry["pooled"]
    labels = np.concatenate([c[1] for c in clinics.values()])
    want = roc_auc_score(labels, every)
    assert pooled["auroc"] == pytest.approx(want, abs=1e-12) and entry["pooled_auroc"] == pooled["auroc"]
    assert pooled["auroc_low"] <= pooled["auroc"] <= pooled["auroc_high"]
    cut = pooled["threshold_logit"]
    assert pooled["sensitivity"] == np.mean(every[labels == 1] >= cut)
    assert pooled["specificity"] == np.mean(every[labels == 0] < cut)
    assert pooled["called_positive"] == 1.0
    final = [c for c in entry["clinics"] if c["phase"] == "evaluate" and c["server_round"] == 3]
    assert len(final) == 3
    for row in final:
        q, own, y = row["quality"], scores[row["clinic"]], clinics[row["clinic"]][1]
        assert row["auroc"] == pytest.approx(roc_auc_score(y, own), abs=1e-12) == q["auroc"]
        assert q["auroc_low"] <= row["auroc"] <= q["auroc_high"]
        assert (q["sensitivity"], q["specificity"]) == (
            np.mean(own[y == 1] >= q["threshold_logit"]),
            np.mean(own[y == 0] < q["threshold_logit"]),
        )
        assert q["threshold_logit"] > 50 and q["threshold"] == 1.0  # the probability says 1.0; the log-odds say where
    # the clinic mean is the clinics' AUROCs weighted by images; the headline is pooled
    weights = [r["num_examples"] for r in final]
    assert entry["clinic_mean_auroc"] == pytest.approx(np.average([r["auroc"] for r in final], weights=weights))

    warnings = " | ".join(entry["warnings"])
    assert "calls every validation image 'opacity'" in warnings
    assert "validation loss rose 3 rounds in a row" in warnings
    assert entry["selected"]["round"] in (1, 2, 3)
    board = cli("server.cli", "leaderboard", "--db", db)
    flat = " ".join(board.stdout.split())
    assert "⚠" in flat and "calls every validation image" in flat, board.stdout


def _entry(pooled: dict, losses: list[float], clinics: list[dict] | None = None) -> dict:
    rounds = [{"server_round": i, "val_loss": v, "pooled": pooled} for i, v in enumerate(losses)]
    return {"rounds": rounds, "clinics": clinics or []}


def test_each_warning_rule_and_a_healthy_model():
    healthy = {
        "auroc": 0.9,
        "auroc_low": 0.8,
        "auroc_high": 0.96,
        "distinct_scores": 80,
        "called_positive": 0.45,
        "prevalence": 0.4,
    }
    assert model_warnings(_entry(healthy, [0.7, 0.5, 0.45, 0.5])) == []
    constant = {**healthy, "distinct_scores": 1, "auroc": 0.5, "called_positive": 0.0}
    assert any("constant predictions" in w for w in model_warnings(_entry(constant, [0.7])))
    assert any("'normal'" in w for w in model_warnings(_entry(constant, [0.7]), ("normal", "opacity")))
    rising = model_warnings(_entry(healthy, [0.69, 1.27, 4.9, 7.5, 7.5]))
    assert rising == ["validation loss rose 3 rounds in a row (round 0 → 3: 0.69 → 7.50): over-fitting or diverging"]
    assert model_warnings(_entry(healthy, [0.69, 1.27, 4.9, 4.0, 7.5])) == []  # two rises, then a fall
    backwards = {**healthy, "auroc": 0.2, "auroc_low": 0.1, "auroc_high": 0.3}
    assert any("backwards" in w for w in model_warnings(_entry(backwards, [0.7])))
    broken = [{"phase": "evaluate", "server_round": 0, "clinic": "clinic-1", "quality": {"nonfinite": 4}}]
    assert any("non-finite scores for 4" in w for w in model_warnings(_entry(healthy, [0.7], broken)))
