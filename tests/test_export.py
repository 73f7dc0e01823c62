"""`coordinator export`: a tiny run built straight into a SQLite store (no federation),
exported as ONNX and TorchScript, each file run by its own runtime against PyTorch, and
its model card checked against the store; every refusal is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord
from typer.testing import CliRunner

from radfed.model_export import check_batch, load_checkpoint_model
from radfed.models import create_model
from radfed.reply import LABELS, POOLED_AUROC, from_logits
from radfed.spec import ExperimentSpec
from radfed.store import Store
from radfed.training import predict_logits
from server.cli import app
from server.export import ExportError, checkpoint_card, export_run, find_run
from server.recorder import RunRecorder
from strategies.utils import ClinicReply, split_metrics

pytestmark = pytest.mark.e2e

FLWR_RUN = "8577920735297922023"
CARD = {
    "labels": ["normal", "opacity"],
    "train": {
        "images": {"normal": 12, "opacity": 8},
        "patients": {"normal": 6, "opacity": 4},
        "total_images": 20,
        "total_patients": 10,
    },
    "val": {
        "images": {"normal": 4, "opacity": 4},
        "patients": {"normal": 2, "opacity": 2},
        "total_images": 8,
        "total_patients": 4,
    },
    "rejected": {"corrupt": 1},
    "rejected_total": 1,
    "modalities": {"CR": 28},
    "manufacturers": {"Acme": 28},
    "sizes": {"1024-2047 px": 28},
    "transfer_syntaxes": {"Explicit VR Little Endian": 28},
    "filtered": 0,
}


def _reply(name: str, model: torch.nn.Module, seed: int, n: int = 16) -> ClinicReply:
    """What a clinic's evaluate reply holds, as the strategy reads it back."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 32, 32, generator=g)
    labels = np.r_[0, 1, (torch.rand(n - 2, generator=g) < 0.5).numpy().astype(int)]
    images[torch.from_numpy(labels == 1), :, 8:20, 8:20] += 0.5
    logits = predict_logits(model, images.clamp(0, 1))
    sent = MetricRecord(from_logits(logits.numpy(), labels, np.arange(n) // 2, seed=0).to_metrics("num-examples"))
    metrics, lists = split_metrics([sent])
    return ClinicReply(node_id=str(seed), clinic=name, device="cpu", metrics=metrics, lists=lists)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[str, Path]:
    """Two rounds of a resnet18 at 32 px, two clinics, a held-out third, checkpoints on disk."""
    tmp = tmp_path_factory.mktemp("export")
    db = f"sqlite:///{tmp / 'radfed.db'}"
    store = Store(db)
    spec = ExperimentSpec(
        name="tiny chest", labels=("normal", "opacity"), backbone="resnet18", image_size=32, rounds=2, strategy="fedavg"
    )
    exp = store.create_experiment(spec.name, spec.to_json(), spec.backbone, spec.weights, spec.strategy)
    run = store.start_run(exp, FLWR_RUN, rounds_planned=2, holdout="clinic-3")
    recorder = RunRecorder(store, run, spec, tmp / "ckpt", flwr_run_id=FLWR_RUN)
    torch.manual_seed(0)
    model = create_model("resnet18", 2).eval()
    for rnd in (1, 2):
        with torch.no_grad():
            model.head.weight.add_(0.05 * torch.randn_like(model.head.weight))
        for clinic in ("clinic-1", "clinic-2"):
            store.record_clinic_result(run, rnd, clinic, "1", "train", loss=0.7, num_examples=20)
        replies = [_reply("clinic-1", model, 1), _reply("clinic-2", model, 2)]
        recorder.clinic_replies(rnd, "evaluate", replies)
        recorder.round_metrics(rnd, "evaluate", None, replies)
        recorder.checkpoint(rnd, ArrayRecord(model.state_dict()))
    recorder.holdout(2, _reply("clinic-3", model, 3))
    for clinic in ("clinic-1", "clinic-2"):
        store.record_data_card(run, clinic, "1", CARD)
    store.finish_run(run, "completed", final_auroc=recorder.val_auroc[2])
    return db, tmp


def _store_numbers(db: str, server_round: int) -> tuple[dict, list[dict], dict]:
    [entry] = Store(db).leaderboard()
    pooled = next(r["pooled"] for r in entry["rounds"] if r["server_round"] == server_round)
    clinics = [c for c in entry["clinics"] if c["phase"] == "evaluate" and c["server_round"] == server_round]
    return pooled, clinics, entry


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_and_the_card_matches_the_store(tiny_run, tmp_path, fmt):
    db, _ = tiny_run
    done = export_run(Store(db), FLWR_RUN, fmt, out=tmp_path)
    pooled, clinics, entry = _store_numbers(db, done.server_round)
    assert done.server_round == entry["selected"]["round"]  # default: the selected checkpoint
    assert done.model.name == f"tiny-chest-run-{FLWR_RUN}-round-{done.server_round}" + (
        ".onnx" if fmt == "onnx" else ".pt"
    )
    assert done.exported.check.max_abs_diff <= 1e-4
    print(f"{fmt}: max abs difference {done.exported.check.max_abs_diff:.3g}")

    # the file again, run here by its own runtime on a batch of another size than the check's
    row = next(c for c in entry["checkpoints"] if c["server_round"] == done.server_round)
    model, normalisation = load_checkpoint_model(Path(row["path"]), entry["spec_json"])
    assert normalisation == "radimagenet"
    batch = check_batch(32, batch=5, seed=7)
    with torch.no_grad():
        want = model(batch).numpy()
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(done.model))
        onnx.checker.check_model(proto, full_check=True)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
        session = ort.InferenceSession(str(done.model), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == [1, 32, 32]
        assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch axis
        got = session.run(None, {"image": batch.numpy()})[0]
    else:
        got = torch.jit.load(str(done.model)).eval()(batch).detach().numpy()
    assert got.shape == (5, 2) and np.abs(got - want).max() <= 1e-4

    card = json.loads(done.card_json.read_text())
    assert card["export"]["sha256"] == done.sha256 and card["export"]["check"]["passed"]
    assert card["export"]["check"]["max_abs_diff"] == done.exported.check.max_abs_diff
    assert card["task"]["labels"] == ["normal", "opacity"]
    assert card["backbone"]["architecture"] == "resnet18" and card["backbone"]["weights"] == "random"
    inp = card["input"]
    assert inp["shape"] == ["N", 1, 32, 32] and inp["value_range"] == [0.0, 1.0]
    assert inp["inside_the_model"]["normalisation"] == "radimagenet"
    assert inp["inside_the_model"]["mean"] == [0.5] * 3 and inp["inside_the_model"]["std"] == [0.5] * 3
    ev = card["evaluation"]
    assert ev["headline"]["name"] == POOLED_AUROC
    assert ev["headline"]["auroc"] == pooled["auroc"]
    assert ev["headline"]["ci95"] == [pooled["auroc_low"], pooled["auroc_high"]]
    assert ev["pooled"]["sensitivity"] == pooled["sensitivity"] and ev["pooled"]["ece"] == pooled["ece"]
    assert {c["clinic"]: c["auroc"] for c in ev["per_clinic"]} == {c["clinic"]: c["auroc"] for c in clinics}
    assert {c["clinic"]: c["auroc_low"] for c in ev["per_clinic"]} == {
        c["clinic"]: c["quality"]["auroc_low"] for c in clinics
    }
    assert ev["run_headline"]["auroc"] == entry["pooled_auroc"]
    [held] = ev["holdout"]
    store_held = next(c for c in entry["clinics"] if c["phase"] == "holdout")
    assert held["clinic"] == "clinic-3" and held["auroc"] == store_held["auroc"]
    assert ev["labels"]["auroc_low"] == LABELS["auroc_low"]
    trained = card["training"]["clinics"]
    assert [c["clinic"] for c in trained] == ["clinic-1", "clinic-2"]  # not the held-out clinic
    assert trained[0]["train"]["images"] == 20 and trained[0]["val"]["patients"] == 4
    assert trained[0]["train"]["images_by_label"] == {"normal": 12, "opacity": 8}
    assert card["training"]["rounds_done"] == 2 and card["training"]["strategy"] == "fedavg"
    assert card["training"]["privacy"] == {"mode": "none"}
    assert card["selection"]["round"] == done.server_round and "selected checkpoint" in card["selection"]["reason"]
    assert "not a medical device" in card["intended_use"].lower()
    assert any("2 clinic(s)" in item for item in card["limitations"])
    assert any("patient split" in item for item in card["limitations"])
    md = done.card_md.read_text()
    assert done.sha256 in md and "Not a medical device" in md and "[0, 1]" in md
    assert "clinic-1" in md and "Held-out clinic clinic-3" in md and f"{POOLED_AUROC}" in md


def test_round_option_and_card_without_export(tiny_run, tmp_path):
    db, _ = tiny_run
    store = Store(db)
    entry = find_run(store, FLWR_RUN)
    assert find_run(store, str(entry["run_id"]))["flwr_run_id"] == FLWR_RUN  # the store's id works too
    name, md = checkpoint_card(entry)
    assert name.endswith(".card.md") and "No exported file" in md and "Model card: tiny chest" in md


def _invoke(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def _one_error_line(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_refusals_are_one_line(tiny_run, tmp_path):
    db, tmp = tiny_run
    _one_error_line(_invoke("999999", "--db", db, "--out", str(tmp_path)), "no run 999999")
    _one_error_line(
        _invoke(FLWR_RUN, "--round", "7", "--db", db, "--out", str(tmp_path)), "no checkpoint for round 7", "1, 2"
    )
    moved = tmp / "ckpt" / "round-001.pt"
    moved.rename(moved.with_suffix(".bak"))
    try:
        _one_error_line(
            _invoke(FLWR_RUN, "--round", "1", "--db", db, "--out", str(tmp_path)), "round 1 is missing", "round-001.pt"
        )
    finally:
        moved.with_suffix(".bak").rename(moved)
    original = moved.read_bytes()
    moved.write_bytes(original + b"x")
    try:
        _one_error_line(
            _invoke(FLWR_RUN, "--round", "1", "--db", db, "--out", str(tmp_path)), "changed since it was recorded"
        )
    finally:
        moved.write_bytes(original)
    _one_error_line(
        _invoke(FLWR_RUN, "--format", "tflite", "--db", db, "--out", str(tmp_path)), "unknown format 'tflite'"
    )
    assert not list(tmp_path.iterdir())  # nothing written by a refusal
    with pytest.raises(ExportError, match="no checkpoints recorded"):
        from server.export import choose_checkpoint

        choose_checkpoint({"flwr_run_id": "1", "checkpoints": []})


@pytest.mark.timeout(300)
def test_cli_prints_the_paths_and_the_difference(tiny_run, tmp_path):
    db, _ = tiny_run
    result = _invoke(FLWR_RUN, "--round", "1", "--db", db, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    assert [p.name for p in paths] == [
        f"tiny-chest-run-{FLWR_RUN}-round-1.onnx",
        f"tiny-chest-run-{FLWR_RUN}-round-1.onnx.card.md",
        f"tiny-chest-run-{FLWR_RUN}-round-1.onnx.card.json",
    ]
    assert all(p.is_file() for p in paths)
    assert "max abs difference from PyTorch" in result.stderr and "asked for with --round" in result.stderr
    assert json.loads(paths[2].read_text())["selection"]["round"] == 1


@pytest.mark.timeout(300)
def test_dashboard_offers_the_card_and_the_exports(tiny_run, tmp_path, monkeypatch):
    """A TorchScript file `coordinator export` wrote is offered as it is; ONNX on a click."""
    import sys

    from streamlit.testing.v1 import AppTest

    db, _ = tiny_run
    monkeypatch.setenv("RADFED_HOME", str(tmp_path))
    done = export_run(Store(db), FLWR_RUN, "torchscript")  # the default folder, where the dashboard looks
    assert done.model.parent == tmp_path / "exports"
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    monkeypatch.setattr(sys, "argv", [str(app), "--db", db])
    at = AppTest.from_file(str(app), default_timeout=120)
    at.run()
    at.switch_page("run.py").run()  # the run's page: checkpoints, card and exports
    assert not at.exception, at.exception
    from dashboard.context import file_stem

    [entry] = Store(db).leaderboard()
    stem = file_stem(entry, done.server_round)  # downloads are named after experiment and run number
    assert stem == f"{entry['experiment'].replace(' ', '-')}-run-{entry['run_id']}-round-{done.server_round}"
    names = {b.label: b for b in at.download_button}
    assert "Download model card (Markdown)" in names
    assert f"Download TorchScript ({stem}.pt)" in names and "Download TorchScript model card" in names
    assert "Export TorchScript" not in [b.label for b in at.button]

    next(b for b in at.button if b.label == "Export ONNX").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert f"Download ONNX ({stem}.onnx)" in [b.label for b in at.download_button]
    assert (tmp_path / "exports" / f"{done.model.stem}.onnx.card.md").is_file()  # on disk: export's own name
    assert any("max abs difference from PyTorch" in c.value for c in at.caption)
