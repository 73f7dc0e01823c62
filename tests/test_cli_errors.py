"""Bad input at the command line: one clear line, a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from radfed.processes import free_port
from tests.federation import cli

pytestmark = pytest.mark.e2e


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def dead_link() -> str:
    return f"127.0.0.1:{free_port()}"


def _start(*args: str):
    return cli("client_node.cli", "start", "--insecure", "--name", "clinic-a", *args, timeout=60)


def test_missing_data_folder(tmp_path, dead_link):
    proc = _start("--superlink", dead_link, "--data", str(tmp_path / "nope"))
    _one_line_error(proc, "nope", "does not exist", "pass the folder")


def test_empty_manifest(tmp_path, dead_link):
    (tmp_path / "labels.csv").write_text("")
    proc = _start("--superlink", dead_link, "--data", str(tmp_path))
    _one_line_error(proc, "labels.csv", "empty")


def test_manifest_naming_missing_files(tmp_path, dead_link):
    (tmp_path / "labels.csv").write_text("file,label\nmissing-1.dcm,normal\nmissing-2.dcm,opacity\n")
    proc = _start("--superlink", dead_link, "--data", str(tmp_path))
    _one_line_error(proc, "do not exist", "labels.csv line 2")


def test_unreachable_superlink_for_a_clinic(tmp_path, dead_link):
    from radfed.demo_data import write_clinic

    write_clinic(tmp_path / "c", clinic_index=0, n_patients=4, prevalence=0.5)
    proc = _start("--superlink", dead_link, "--data", str(tmp_path / "c"))
    _one_line_error(proc, dead_link, "not reachable")


def test_unreachable_superlink_for_a_run(tmp_path, dead_link):
    spec = tmp_path / "exp.toml"
    spec.write_text('name = "x"\nbackbone = "resnet18"\n')
    proc = cli(
        "server.cli",
        "run",
        str(spec),
        "--control",
        dead_link,
        "--insecure",
        "--db",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        timeout=120,
    )
    _one_line_error(proc, dead_link, "not reachable")


@pytest.mark.parametrize(
    "line, needles",
    [
        ('strategy = "fedbest"', ("'strategy'", "fedavg")),
        ("rounds = 0", ("'rounds'", "from 1")),
        ('colour = "blue"', ("unknown key 'colour'", "backbone")),
        ('weights = "/no/such/weights.pt"', ("'weights'", "no such file")),
    ],
)
def test_bad_spec_names_the_key(tmp_path, line, needles):
    spec = tmp_path / "exp.toml"
    spec.write_text(f'name = "x"\n{line}\n')
    proc = cli("server.cli", "run", str(spec), "--insecure", timeout=120)
    assert proc.returncode == 2
    _one_line_error(proc, *needles)


def test_insecure_superlink_refused_off_loopback():
    proc = cli("server.cli", "superlink", "--insecure", "--host", "0.0.0.0", timeout=60)
    _one_line_error(proc, "loopback")


def test_every_command_has_help_with_an_example():
    for module, commands in {
        "server.cli": ["superlink", "run", "leaderboard", "demo", "strategies", "baseline"],
        "client_node.cli": ["start", "demo-data", "check-data"],
    }.items():
        for command in commands:
            proc = cli(module, command, "--help", timeout=60)
            assert proc.returncode == 0 and "Example" in proc.stdout, (module, command)


def test_baseline_bad_data_and_holdout(tmp_path):
    from radfed.spec import ExperimentSpec, spec_to_toml

    spec = tmp_path / "exp.toml"
    spec.write_text(spec_to_toml(ExperimentSpec(name="b", backbone="resnet18")))
    proc = cli("server.cli", "baseline", str(spec), "--data", str(tmp_path / "nope"), timeout=60)
    _one_line_error(proc, "nope", "does not exist")
    (tmp_path / "a").mkdir()
    proc = cli(
        "server.cli",
        "baseline",
        str(spec),
        "--data",
        str(tmp_path / "a"),
        "--holdout",
        "zz",
        "--db",
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        timeout=60,
    )
    _one_line_error(proc, "holdout clinic 'zz' is not one of the --data clinics (a)")
