"""Researchers' accounts and the dashboard's login rule: hashes only, refusals, the rate
limit, the login form beyond loopback, OIDC accounts, audited downloads, and the
`dashboard` script that will not serve beyond loopback when nobody could log in."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.login_rule import is_loopback, oidc_configured, serve_refusal
from radfed.audit import Registry
from radfed.researchers import LoginRefused, Researchers, delay_after
from radfed.store import Store
from tests.accounts import add_researcher, log_in_app, served_on
from tests.federation import ROOT, cli
from tests.test_store import pg_schema_url, store_url  # noqa: F401 - fixtures: SQLite and PostgreSQL

APP = ROOT / "dashboard" / "app.py"
OIDC = {
    "redirect_uri": "https://radfed.example.org/oauth2callback",
    "cookie_secret": "x" * 32,
    "client_id": "radfed",
    "client_secret": "s",
    "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'radfed.db'}"


@pytest.fixture
def researchers(db: str) -> Researchers:
    return Researchers(Store(db))


@pytest.fixture
def on_both(store_url: str) -> Researchers:  # noqa: F811 - fixture
    """Accounts on SQLite and on PostgreSQL (skipped when no server is there)."""
    return Researchers(Store(store_url))


def _kinds(store: Store, researcher: str) -> list[str]:
    return [e["kind"] for e in Registry(store).events(researcher=researcher)]


# -- accounts ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_only_a_salted_hash_is_stored(researchers: Researchers, tmp_path: Path) -> None:
    secret = researchers.add("alice")
    researchers.add("bob", secret=secret)  # the same secret, another salt
    assert secret and len(secret) >= 20
    raw = sqlite3.connect(tmp_path / "radfed.db")
    dump = "\n".join(raw.iterdump())
    assert secret not in dump
    hashes = dict(raw.execute("SELECT name, secret_hash FROM researchers"))
    assert all(h.startswith("scrypt$") for h in hashes.values())
    assert hashes["alice"] != hashes["bob"]
    assert researchers.login("alice", secret).name == "alice"
    assert researchers.login("bob", secret).name == "bob"


@pytest.mark.e2e
def test_wrong_secret_and_unknown_name_get_the_same_answer(researchers: Researchers, db: str) -> None:
    researchers.add("alice", secret="correct horse battery")
    answers = []
    for name, secret in [
        ("alice", "wrong secret here"),
        ("mallory", "correct horse battery"),
        ("../etc", "x" * 20),
        ("alice", "x" * 5000),
        ("[/bold] [red]x", "y" * 20),
    ]:
        with pytest.raises(LoginRefused) as refused:
            researchers.login(name, secret)
        answers.append(refused.value.message)
    assert set(answers) == {"wrong name or password"}
    kinds = [e["kind"] for e in researchers.audit.events(kind="login-failed")]
    assert len(kinds) == 5
    trail = cli("server.cli", "audit", "--db", db, timeout=60)  # what was typed is shown, not obeyed
    assert trail.returncode == 0 and "[/bold]" in trail.stdout, trail.stderr


@pytest.mark.e2e
def test_disabled_account_is_refused_until_enabled(researchers: Researchers) -> None:
    researchers.add("alice", secret="correct horse battery")
    researchers.disable("alice")
    with pytest.raises(LoginRefused):
        researchers.login("alice", "correct horse battery")
    later = datetime.now(UTC) + timedelta(seconds=5)
    researchers.enable("alice")
    assert researchers.login("alice", "correct horse battery", now=later).name == "alice"
    assert researchers.active("alice") is not None


def test_oidc_account_has_no_password(researchers: Researchers) -> None:
    assert researchers.add("carol@hospital.org", kind="oidc") is None
    with pytest.raises(LoginRefused):
        researchers.login("carol@hospital.org", "anything at all")
    assert researchers.get("carol@hospital.org").secret_hash is None


@pytest.mark.e2e
def test_failed_logins_are_rate_limited_per_name(on_both: Researchers) -> None:
    """After n failures the name waits 2^(n-1) s; meanwhile even the right secret is refused,
    and a name that does not exist is throttled alike (no telling which names exist)."""
    researchers = on_both
    assert [delay_after(n) for n in (0, 1, 2, 3, 4)] == [0, 1, 2, 4, 8] and delay_after(100) == 900
    researchers.add("alice", secret="correct horse battery")
    t = datetime.now(UTC)
    for name in ("alice", "nobody"):
        now = t
        for failures in range(1, 5):
            with pytest.raises(LoginRefused) as refused:
                researchers.login(name, "wrong secret here", now=now)
            assert refused.value.retry_after == 0
            with pytest.raises(LoginRefused) as throttled:  # too soon, even with the right secret
                researchers.login(name, "correct horse battery", now=now + timedelta(seconds=0.5))
            assert "try again in" in throttled.value.message
            assert throttled.value.retry_after == pytest.approx(max(delay_after(failures) - 0.5, 1), abs=0.01)
            now += timedelta(seconds=delay_after(failures))
    assert researchers.login("alice", "correct horse battery", now=now).name == "alice"
    assert [a["failed_logins"] for a in researchers.accounts()] == [0]  # forgotten on success
    details = [e["detail"] for e in researchers.audit.events(kind="login-failed", researcher="alice")]
    assert sum("throttled" in d for d in details) == 4 and sum("wrong secret" in d for d in details) == 4


@pytest.mark.e2e
def test_researcher_cli_prints_the_secret_once_and_lists_no_hash(db: str, tmp_path: Path) -> None:
    added = cli("server.cli", "researcher", "add", "alice", "--db", db, timeout=60)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert len(secret.splitlines()) == 1 and len(secret) >= 20
    Researchers(Store(db)).login("alice", secret)
    again = cli("server.cli", "researcher", "add", "alice", "--db", db, timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--reset" in again.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "researcher", "add", "bob", "--stdin", "--db", db],
        input="a secret from stdin\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    Researchers(Store(db)).login("bob", "a secret from stdin")
    listed = cli("server.cli", "researcher", "list", "--json", "--db", db, timeout=60)
    assert "scrypt" not in listed.stdout and secret not in listed.stdout and '"alice"' in listed.stdout
    gone = cli("server.cli", "researcher", "disable", "nobody", "--db", db, timeout=60)
    assert gone.returncode == 2 and gone.stderr.strip().count("\n") == 0 and "no researcher nobody" in gone.stderr
    assert cli("server.cli", "researcher", "disable", "alice", "--db", db, timeout=60).returncode == 0
    with pytest.raises(LoginRefused):
        Researchers(Store(db)).login("alice", secret, now=datetime.now(UTC) + timedelta(hours=1))


# -- the dashboard ----------------------------------------------------------------------


def _dashboard(monkeypatch: pytest.MonkeyPatch, db: str) -> AppTest:
    monkeypatch.setattr(sys, "argv", [str(APP), "--db", db])
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _fill(db: str) -> None:
    with Store(db) as store:
        exp = store.create_experiment("secret-study", "{}", "resnet18", "random", "fedavg")
        run = store.start_run(exp, "4242", rounds_planned=1)
        store.record_round(run, 1, val_auroc=0.8)
        store.finish_run(run, "completed", final_auroc=0.8)


def _shows_results(at: AppTest) -> bool:
    """Any trace of the store's results: a table, a chart's data or a selectable run."""
    shown = [str(t.value) for t in [*at.dataframe, *at.table]] + [str(s.options) for s in at.selectbox]
    shown += [m.value for m in [*at.markdown, *at.caption]]
    return any("secret-study" in text for text in shown)


@pytest.mark.e2e
@pytest.mark.parametrize("address", ["0.0.0.0", None, "10.1.2.3"])
def test_beyond_loopback_every_page_shows_only_the_login_form(monkeypatch, db, address) -> None:
    _fill(db)
    secret = add_researcher(db, "alice")
    with served_on(address):
        at = _dashboard(monkeypatch, db)
        assert [t.label for t in at.text_input] == ["Name", "Secret"]
        assert not _shows_results(at) and not at.title and not at.sidebar.button
        at = log_in_app(at, "alice", "not the secret at all")
        assert [e.value for e in at.error] == ["wrong name or password"] and not _shows_results(at)
        time.sleep(delay_after(1) + 0.1)  # the rate limit: 1 s after one failure
        at = log_in_app(at, "alice", secret)
        assert not at.exception, at.exception
        assert _shows_results(at) and not at.text_input
        assert any("alice" in c.value for c in at.sidebar.caption)
        at.button(key="radfed-logout").click()
        at.run()
        assert [t.label for t in at.text_input] == ["Name", "Secret"] and not _shows_results(at)
    assert _kinds(Store(db), "alice") == ["account", "login-failed", "login", "logout"]


@pytest.mark.e2e
def test_on_loopback_reading_needs_no_login(monkeypatch, db) -> None:
    _fill(db)
    add_researcher(db, "alice")
    with served_on("127.0.0.1"):
        at = _dashboard(monkeypatch, db)
    assert _shows_results(at) and not at.text_input


@pytest.mark.e2e
def test_disabling_an_account_ends_its_session(monkeypatch, db) -> None:
    _fill(db)
    secret = add_researcher(db, "alice")
    with served_on("0.0.0.0"):
        at = log_in_app(_dashboard(monkeypatch, db), "alice", secret)
        assert _shows_results(at)
        Researchers(Store(db)).disable("alice")
        at.run()
        assert not _shows_results(at) and [t.label for t in at.text_input] == ["Name", "Secret"]


@pytest.mark.e2e
def test_downloads_are_audited_under_the_researchers_name(monkeypatch, db) -> None:
    secret = add_researcher(db, "alice")

    def page() -> None:
        import streamlit as st

        from dashboard.auth import record_download, require_login

        require_login()
        st.button("Download", key="dl", on_click=record_download, args=("checkpoint of run 7, round 2",))

    monkeypatch.setattr(sys, "argv", ["app", "--db", db])
    with served_on("0.0.0.0"):
        at = AppTest.from_function(page, default_timeout=60).run()
        at = log_in_app(at, "alice", secret)
        at.button(key="dl").click()
        at.run()
    assert not at.exception, at.exception
    events = Registry(Store(db)).events(kind="downloaded")
    assert [(e["researcher"], e["detail"]) for e in events] == [("alice", "checkpoint of run 7, round 2")]


def _oidc_page() -> None:
    import streamlit as st

    from dashboard.auth import require_login

    who = require_login()
    st.write(f"hello {who.name} ({who.kind})")


@pytest.mark.e2e
@pytest.mark.parametrize("has_account", [True, False])
def test_oidc_login_needs_an_oidc_account(monkeypatch, db, has_account) -> None:
    """With [auth] in the secrets, the identity provider's button is offered; an identity it
    vouched for gets in only with an account added with --oidc."""
    import dashboard.auth

    if has_account:
        add_researcher(db, "carol@hospital.org", kind="oidc")
    monkeypatch.setattr(sys, "argv", ["app", "--db", db])
    with served_on("0.0.0.0"):
        at = AppTest.from_function(_oidc_page, default_timeout=60)
        at.secrets["auth"] = OIDC
        at.run()
        assert "Log in with the hospital's identity provider" in [b.label for b in at.button]
        monkeypatch.setattr(dashboard.auth, "oidc_identity", lambda: "carol@hospital.org")
        at.run()
    assert not at.exception, at.exception
    if has_account:
        assert [m.value for m in at.markdown] == ["hello carol@hospital.org (oidc)"]
        assert _kinds(Store(db), "carol@hospital.org") == ["account", "login"]
    else:
        assert "no active radfed account" in at.error[0].value and not at.markdown


# -- serving ----------------------------------------------------------------------------


def test_login_rule() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "", None, "::", "10.0.0.5", "dashboard.example.org"))
    assert serve_refusal("127.0.0.1", False, False, "") is None
    assert serve_refusal("0.0.0.0", True, False, "") is None and serve_refusal("0.0.0.0", False, True, "") is None
    assert "coordinator researcher add NAME" in serve_refusal("0.0.0.0", False, False, "")


def test_beyond_loopback_a_browser_sees_no_tracebacks() -> None:
    from dashboard.cli import streamlit_command

    def details(host: str) -> str:
        command = streamlit_command("sqlite://", host, 8501)
        return command[command.index("--client.showErrorDetails") + 1]

    assert details("127.0.0.1") == "full" and details("0.0.0.0") == "type"


def test_oidc_is_configured_by_an_auth_table(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    assert not oidc_configured([secrets])
    secrets.write_text(
        '[auth]\nredirect_uri = "https://x/oauth2callback"\ncookie_secret = "c"\n'
        '[auth.microsoft]\nclient_id = "id"\nclient_secret = "s"\n'
    )
    assert oidc_configured([secrets])
    secrets.write_text('[auth]\nredirect_uri = "https://x/oauth2callback"\n')
    assert not oidc_configured([secrets])


def _own_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one (the source address of
    a route out: connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(address) or address == "0.0.0.0" else address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_dashboard_refuses_beyond_loopback_without_accounts(db: str, tmp_path: Path) -> None:
    Store(db).close()
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.streamlit/secrets.toml
    proc = subprocess.run(
        [sys.executable, "-m", "dashboard.cli", "--db", db, "--host", "0.0.0.0", "--port", str(_free_port())],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0" in lines[0], proc.stderr
    assert "coordinator researcher add NAME --db" in lines[0] and "--host 127.0.0.1" in lines[0]
    assert "Streamlit" not in proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_dashboard_serves_beyond_loopback_once_an_account_exists(db: str, tmp_path: Path) -> None:
    """A real server on a non-loopback address of this machine; what it shows without a
    session is the login form (checked above at AppTest level: the page is drawn by JS)."""
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    add_researcher(db, "alice")
    port = _free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard.cli", "--db", db, "--host", address, "--port", str(port)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://{address}:{port}/_stcore/health", timeout=2) as reply:
                    if reply.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=5) as reply:
            page = reply.read().decode()
        assert "secret-study" not in page and "<noscript>" in page.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
