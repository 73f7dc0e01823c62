"""compose.yaml cannot run here (no Docker engine): check the file itself instead."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from tests.federation import ROOT, cli

SCRIPT_MODULES = {"coordinator": "server.cli", "client-node": "client_node.cli", "dashboard": "dashboard.cli"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_commands_are_radfed_console_scripts():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    radfed_services = {n: s for n, s in _compose()["services"].items() if "command" in s}
    assert {"superlink", "dashboard", "clinic"} <= set(radfed_services)
    for name, service in radfed_services.items():
        command = service["command"]
        assert command[0] in scripts, f"{name}: {command[0]} is not a console script"
        module, _, func = scripts[command[0]].partition(":")
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").is_file() and func == "main"


@pytest.mark.e2e
def test_compose_commands_accept_their_arguments():
    """Each command line parses: `--help` appended after the service's own options."""
    for name, service in _compose()["services"].items():
        if "command" not in service:
            continue
        command = service["command"]
        proc = cli(SCRIPT_MODULES[command[0]], *command[1:], "--help", timeout=60)
        assert proc.returncode == 0, (name, proc.stderr)


def test_build_context_has_a_dockerfile():
    assert (ROOT / "Dockerfile").is_file()
    for service in _compose()["services"].values():
        if service.get("build"):
            assert (ROOT / service["build"] / "Dockerfile").is_file() if isinstance(service["build"], str) else True


def test_superlink_publishes_only_the_clinics_door():
    """The control door stays on the container's loopback; only the Fleet API is published."""
    service = _compose()["services"]["superlink"]
    command = service["command"]
    port = command[command.index("--port") + 1]
    assert service["ports"] == [f"{port}:{port}"]
    assert "--insecure" not in command and "--control-port" not in command
    assert "--remote-control" not in command  # opt-in, with a credential, documented in the file


def test_dashboard_service_serves_beyond_loopback_once_a_researcher_exists(tmp_path, monkeypatch):
    """The dashboard's command listens on 0.0.0.0: `dashboard` refuses it until an account
    exists (one line with the fix); the file says how to add one before the first start."""
    import dashboard.cli
    from dashboard.cli import access_refusal
    from tests.accounts import add_researcher

    monkeypatch.setattr(dashboard.cli, "oidc_configured", lambda: False)  # this machine's secrets

    command = _compose()["services"]["dashboard"]["command"]
    host = command[command.index("--host") + 1]
    db = f"sqlite:///{tmp_path / 'radfed.db'}"
    refusal = access_refusal(db, host, explicit_db=False)
    assert refusal and "coordinator researcher add NAME" in refusal and "\n" not in refusal
    add_researcher(db, "alice")
    assert access_refusal(db, host, explicit_db=False) is None
    text = (ROOT / "compose.yaml").read_text()
    assert "docker compose run --rm dashboard coordinator researcher add" in text


def test_dashboard_and_coordinator_share_database_and_weights_registry():
    """Submissions name weight files of the registry by path: the dashboard that offers them
    and the superlink service that runs them must see the same folder and database."""
    services = _compose()["services"]
    dash, link = services["dashboard"], services["superlink"]
    assert dash["environment"] == link["environment"]
    folder = dash["environment"]["RADFED_WEIGHTS_DIR"]
    assert all(any(v.split(":")[1] == folder for v in s["volumes"]) for s in (dash, link))
    assert all(v.endswith(":ro") for s in (dash, link) for v in s["volumes"] if v.split(":")[1] == folder)
