"""`client-node predict` without a federation: a delivered model file on a labelled and an
unlabelled folder, heat maps, DICOM results that pass dciodvfy, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import pytest
import torch
from pydicom import dcmread

from radfed.delivery import save_model_file
from radfed.demo_data import write_clinic
from radfed.models import create_model
from radfed.spec import ExperimentSpec
from tests.federation import cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def delivered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    write_clinic(folder / "clinic", clinic_index=0, n_patients=6, prevalence=0.5, seed=4)
    spec = ExperimentSpec(name="pred", backbone="resnet18", image_size=32, rounds=1, seed=2)
    torch.manual_seed(0)
    model = create_model("resnet18", 2, "random")
    path = folder / "final.pt"
    save_model_file(
        path,
        model.state_dict(),
        spec=spec.to_json(),
        normalisation=model.normalisation,
        kind="final",
        round=1,
        pooled={"threshold_logit": 0.0},
        clinic={"threshold_logit": 0.1},
        global_digest="ab" * 32,
        experiment="pred",
        flwr_run_id="77",
    )
    return folder, path


def _rows(out):
    with (out / "predictions.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_labelled_folder_with_dicom_results(delivered, tmp_path):
    from radfed.pacs import read_report

    folder, model = delivered
    out = tmp_path / "out"
    proc = cli(
        "client_node.cli",
        "predict",
        "--model",
        str(model),
        "--data",
        str(folder / "clinic"),
        "--out",
        str(out),
        "--dicom-out",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, summary = _rows(out), json.loads((out / "summary.json").read_text())
    assert summary["labelled"] and summary["images"] == len(rows) == summary["heatmaps"] > 0
    assert {r["split"] for r in rows} == {"train", "val"} and "validation" in summary
    assert all(r["call_federation"] == str(int(float(r["finding_logodds"]) >= 0.0)) for r in rows)
    reports = sorted((out / "dicom").glob("*-sr.dcm"))
    captures = sorted((out / "dicom").glob("*-sc.dcm"))
    assert len(reports) == len(captures) == len({r["file"] for r in rows})
    firsts = [r for r in rows if r["sample"] == "0"]
    for report, row in zip(reports, firsts):
        found = read_report(dcmread(report))
        source = dcmread(folder / "clinic" / row["file"])
        assert found.probability == pytest.approx(float(row["p_finding"]), abs=1e-6)
        assert found.threshold == pytest.approx(0.5) and found.model_digest == "ab" * 32
        assert source.SOPInstanceUID in found.source_instance_uids
        assert dcmread(report).StudyInstanceUID == source.StudyInstanceUID
    if shutil.which("dciodvfy") or os.environ.get("RADFED_REQUIRE_DICOM3TOOLS") == "1":
        for path in reports[:2] + captures[:2]:
            check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            errors = [line for line in (check.stdout + check.stderr).splitlines() if "Error" in line]
            assert not errors, (path.name, errors)


def test_predict_unlabelled_folder_and_errors(delivered, tmp_path):
    folder, model = delivered
    bare = tmp_path / "bare"
    shutil.copytree(folder / "clinic", bare)
    (bare / "labels.csv").unlink()
    out = tmp_path / "out"
    proc = cli("client_node.cli", "predict", "--model", str(model), "--data", str(bare), "--out", str(out), "--no-cam")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert rows and {r["split"] for r in rows} == {""} and {r["label"] for r in rows} == {""}
    assert not (out / "heatmaps").exists() and "validation" not in json.loads((out / "summary.json").read_text())
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    bad = cli(
        "client_node.cli", "predict", "--model", str(tmp_path / "junk.pt"), "--data", str(bare), "--out", str(out)
    )
    assert bad.returncode == 1 and "not readable" in bad.stderr and "Traceback" not in bad.stderr
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    bad = cli(
        "client_node.cli", "predict", "--model", str(tmp_path / "plain.pt"), "--data", str(bare), "--out", str(out)
    )
    assert bad.returncode == 1 and "not delivered by a radfed run" in bad.stderr
