"""`coordinator sweep`: the paper's grid from a task file, subsets, refusals before anything
runs, and results grouped by the sweep's tags (real SQLite rows)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from radfed.results import summary
from radfed.store import Store
from server.sweep import PAPER_SCENARIOS, SweepError, expand, load_task
from tests.federation import cli

WIDE = {**os.environ, "COLUMNS": "200"}  # rich tables unwrapped
PAPER = ("resnet50", "densenet121", "inception_v3", "inception_resnet_v2")


def _task(tmp_path: Path, *, imagenet: bool = True, missing: str = "", base: str = "") -> Path:
    lines = ["[sweep]", 'name = "pneu"']
    for source in ("radimagenet", "imagenet") if imagenet else ("radimagenet",):
        lines.append(f"[sweep.weights.{source}]")
        for arch in PAPER:
            path = tmp_path / f"{source}-{arch}.pth"
            if arch != missing:
                path.write_bytes(b"weights")
            lines.append(f'{arch} = "{path}"')
    lines += ["[experiment]", 'labels = ["normal", "pneumonia"]', "rounds = 2", base]
    task = tmp_path / "task.toml"
    task.write_text("\n".join(lines) + "\n")
    return task


def test_the_paper_grid_per_source_in_order(tmp_path):
    task = load_task(_task(tmp_path))
    one = expand(task, ["radimagenet"])
    assert len(one) == 24
    assert [(s.backbone, s.freeze, s.learning_rate) for s in one[:6]] == [
        ("resnet50", f, lr) for f, lr in PAPER_SCENARIOS
    ]
    assert [s.backbone for s in one[::6]] == list(PAPER)
    both = expand(task, ["radimagenet", "imagenet"])
    assert len(both) == 48 and len({s.spec.name for s in both}) == 48
    assert {s.spec.weight_source for s in both[24:]} == {"imagenet"}
    assert all(s.spec.sweep == "pneu" and s.spec.unfreeze_top == 10 and s.spec.rounds == 2 for s in both)
    assert both[30].spec.weights.endswith("imagenet-densenet121.pth")
    assert {s.spec.image_size for s in one if s.backbone.startswith("inception")} == {299}
    assert {(s.freeze, s.learning_rate) for s in one} == {
        ("none", 1e-3),
        ("none", 1e-4),
        ("all", 1e-2),
        ("all", 1e-3),
        ("top-k", 1e-2),
        ("top-k", 1e-3),
    }


def test_subsets(tmp_path):
    task = load_task(_task(tmp_path, base="image_size = 64"))
    picked = expand(task, ["radimagenet"], backbones=["densenet121"], freeze="all")
    assert [(s.backbone, s.freeze, s.learning_rate) for s in picked] == [
        ("densenet121", "all", 1e-2),
        ("densenet121", "all", 1e-3),
    ]
    assert len(expand(task, ["radimagenet", "imagenet"], limit=7)) == 7
    assert {s.spec.image_size for s in expand(task, ["radimagenet"])} == {64}
    with pytest.raises(SweepError, match="allowed"):
        expand(task, ["radimagenet"], backbones=["vgg16"])


@pytest.mark.e2e
@pytest.mark.parametrize(
    "problem, needle",
    [
        ("missing", "[sweep.weights.imagenet] inception_v3"),
        ("no-source", "no [sweep.weights.imagenet] table"),
        ("sweep-sets", "experiment.learning_rate"),
        ("bad-base", "experiment.rounds"),
    ],
)
def test_bad_task_is_refused_before_anything_runs(tmp_path, problem, needle):
    task = _task(
        tmp_path,
        imagenet=problem != "no-source",
        missing="inception_v3" if problem == "missing" else "",
        base={"sweep-sets": "learning_rate = 0.1", "bad-base": "rounds = 0"}.get(problem, "") + "\nimage_size = 64",
    )
    if problem == "missing":  # the radimagenet file of that backbone is there
        (tmp_path / "radimagenet-inception_v3.pth").write_bytes(b"weights")
    if problem == "bad-base":
        task.write_text(task.read_text().replace("rounds = 2\n", ""))
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    proc = cli(
        "server.cli",
        "sweep",
        str(task),
        "--compare",
        "imagenet",
        "--control",
        "127.0.0.1:1",
        "--insecure",
        "--db",
        db,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "radfed.db").exists()  # nothing ran, nothing was recorded


@pytest.mark.e2e
def test_dry_run_prints_the_table_and_runs_nothing(tmp_path):
    proc = cli(
        "server.cli",
        "sweep",
        str(_task(tmp_path, base="image_size = 64")),
        "--compare",
        "imagenet",
        "--backbones",
        "resnet50,densenet121",
        "--dry-run",
        env=WIDE,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "24 scenarios" in proc.stdout and "densenet121" in proc.stdout
    assert "imagenet-resnet50.pth" in proc.stdout and "freeze-all" in proc.stdout


def _run(
    store: Store,
    name: str,
    backbone: str,
    auroc: float | None,
    *,
    sweep: str | None,
    source: str | None,
    status: str = "completed",
) -> None:
    exp = store.create_experiment(name, "{}", backbone, "w.pth", "fedavg", sweep=sweep, weight_source=source)
    run = store.start_run(exp, str(abs(hash(name))), rounds_planned=1)
    store.finish_run(run, status, final_auroc=auroc)


def test_results_are_grouped_by_tags_with_mean_and_sd(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'radfed.db'}") as store:
        r50 = [0.81, 0.74, 0.9, 0.66, 0.7, 0.85]
        for i, value in enumerate(r50):
            _run(store, f"a{i}", "resnet50", value, sweep="pneu", source="radimagenet")
        _run(store, "a-failed", "resnet50", None, sweep="pneu", source="radimagenet", status="failed")
        for i, value in enumerate((0.6, 0.62)):
            _run(store, f"b{i}", "resnet50", value, sweep="pneu", source="imagenet")
        _run(store, "pneu-radimagenet-resnet50-x", "resnet50", 0.99, sweep=None, source=None)  # untagged
        _run(store, "c0", "resnet50", 0.1, sweep="other", source="radimagenet")
        _run(store, "d0", "densenet121", 0.5, sweep="pneu", source="radimagenet")
        rows = summary(store.leaderboard(), "pneu")
    got = {(r["backbone"], r["weight_source"]): r for r in rows}
    assert list(got) == [("resnet50", "imagenet"), ("resnet50", "radimagenet"), ("densenet121", "radimagenet")]
    ours = got[("resnet50", "radimagenet")]
    assert (ours["runs"], ours["scored"], ours["failed"]) == (7, 6, 1)
    assert ours["auroc_mean"] == pytest.approx(statistics.fmean(r50))
    assert ours["auroc_sd"] == pytest.approx(statistics.stdev(r50))
    assert got[("densenet121", "radimagenet")]["auroc_sd"] is None  # one run: no sd


@pytest.mark.e2e
def test_leaderboard_shows_the_sweep_groups(tmp_path):
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    with Store(db) as store:
        for i, value in enumerate((0.8, 0.6)):
            _run(store, f"a{i}", "resnet50", value, sweep="pneu", source="radimagenet")
    proc = cli("server.cli", "leaderboard", "--db", db, env=WIDE, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "mean ± sd" in proc.stdout and "0.700 ± 0.141" in proc.stdout
