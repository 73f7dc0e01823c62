"""CT studies end to end: two clinics of single-slice CT studies labelled per study
(`study_instance_uid,label`), trained in 2.5D on a real SuperLink and two SuperNodes; the
clinics' validation figures count studies, not slices."""

from __future__ import annotations

import json

import pytest

from radfed.data import load_clinic
from radfed.spec import ExperimentSpec, data_options, spec_to_toml
from radfed.store import Store
from tests.ct_studies import LABELS, write_ct_studies
from tests.federation import cli

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(300)
def test_ct_studies_train_end_to_end_and_report_per_study(tmp_path, federation):
    folders = {}
    for i in (1, 2):
        folders[f"clinic-{i}"] = tmp_path / f"ct-{i}"
        write_ct_studies(folders[f"clinic-{i}"], 6, seed=10 + i, slices=(8, 10))
        federation.start_clinic(f"clinic-{i}", folders[f"clinic-{i}"])
    spec = ExperimentSpec(
        name="ct-studies",
        labels=LABELS,
        backbone="resnet18",
        image_size=32,
        rounds=2,
        local_epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        min_clinics=2,
        clinic_timeout=120.0,
        val_fraction=0.34,
        seed=1,
        data={"window": "mediastinum", "slice_policy": "even:3", "slice_stack": 3},
    )
    spec_file = tmp_path / "ct.toml"
    spec_file.write_text(spec_to_toml(spec))
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    proc = cli(
        "server.cli",
        "run",
        str(spec_file),
        "--control",
        federation.control,
        "--insecure",
        "--db",
        db,
        "--checkpoints",
        str(tmp_path / "ckpt"),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + federation.logs()

    entry = {e["experiment"]: e for e in Store(db).leaderboard()}["ct-studies"]
    assert entry["status"] == "completed"
    evaluated = [c for c in entry["clinics"] if c["phase"] == "evaluate"]
    assert sorted({c["clinic"] for c in evaluated}) == ["clinic-1", "clinic-2"]
    for name, folder in folders.items():
        local = load_clinic(
            folder,
            spec.labels,
            spec.image_size,
            val_fraction=spec.val_fraction,
            seed=spec.seed,
            options=data_options(spec.data),
        )
        assert local.val.images.shape[1] == 3 and local.unit == "study"
        studies, slices = local.val.num_units, len(local.val)
        assert 0 < studies < slices
        rows = [c for c in evaluated if c["clinic"] == name]
        assert rows and all(c["num_examples"] == studies for c in rows), (rows, studies, slices)
        card = next(c["card"] for c in entry["data_cards"] if c["clinic"] == name)
        assert card["unit"] == "study" and card["val"]["total_units"] == studies
        assert card == json.loads(json.dumps(local.shared_card()))
