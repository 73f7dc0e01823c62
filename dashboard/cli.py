"""`dashboard` console script: checks the database, then serves dashboard/app.py with Streamlit.

Beyond loopback every page needs a login (dashboard/auth.py), so the script refuses to
serve there while nobody could log in: no researcher account and no OIDC provider
(dashboard/login_rule.py). One line says so, with the fix.

Streamlit runs as a child process (`python -m streamlit run ...`); Ctrl-C and
SIGTERM are forwarded to it and we wait for it, so stopping `dashboard` never
leaves a Streamlit server behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import typer

from dashboard.login_rule import is_loopback, oidc_configured, serve_refusal
from radfed.store import Store, StoreError, default_database_url

APP_PATH = Path(__file__).resolve().with_name("app.py")
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE_S = 10.0

app = typer.Typer(
    add_completion=False,
    help="Serve the radfed dashboard: leaderboard, run comparison, clinics, ROC and calibration, "
    "live progress, audit trail and clinic register.",
)


def streamlit_command(db_url: str, host: str, port: int) -> list[str]:
    """The child command line; headless so it never prompts or opens a browser, with
    Streamlit's developer toolbar (its "Deploy" button) hidden. Beyond loopback a browser
    sees an exception's type only (the traceback and message, which may name paths and
    the database, go to the console)."""
    details = "full" if is_loopback(host) else "type"
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        details,
        "--client.toolbarMode",
        "viewer",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--",
        "--db",
        db_url,
    ]


def check_database(db_url: str) -> None:
    """Fail before Streamlit starts: a bad URL is far clearer here than in a browser."""
    Store(db_url).close()


def access_refusal(db_url: str, host: str, explicit_db: bool) -> str | None:
    """Why serving on `host` is refused (one line with the fix), or None."""
    if is_loopback(host):
        return None
    from radfed.researchers import Researchers

    with Store(db_url) as store:
        has_accounts = Researchers(store).any_active()
        hint = f" --db {store.safe_url}" if explicit_db else ""
    return serve_refusal(host, has_accounts, oidc_configured(), hint)


def serve(command: list[str]) -> int:
    """Run Streamlit in the foreground, forwarding stop signals; returns its exit code."""
    pending: list[int] = []  # a signal that arrives before the child exists
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not children:
            pending.append(signum)
        elif children[0].poll() is None:
            children[0].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        children.append(subprocess.Popen(command))
        if pending:
            children[0].send_signal(pending[0])
        return children[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if children:
            stop(children[0])


def stop(child: subprocess.Popen[bytes]) -> None:
    """Make sure the child is gone: SIGTERM, then SIGKILL after a grace period."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@app.command(
    epilog="Examples:\n\n"
    "dashboard --db sqlite:////home/me/.radfed/radfed.db --port 8501   (then open http://127.0.0.1:8501)\n\n"
    "dashboard --host 0.0.0.0 --port 8501   (every page needs a login: `coordinator researcher add NAME` first)",
)
def run(
    db: str = typer.Option(
        None,
        "--db",
        metavar="URL",
        show_default=False,
        help="Database URL (sqlite:///... or postgresql://...). Default: $DATABASE_URL, "
        "else $RADFED_HOME/radfed.db (~/.radfed).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on; beyond loopback (127.0.0.1, localhost, ::1) every page needs a researcher's login.",
    ),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve the dashboard until Ctrl-C."""
    db_url = db or default_database_url()
    try:
        check_database(db_url)
        refusal = access_refusal(db_url, host, explicit_db=db is not None)
    except StoreError as exc:
        typer.echo(f"dashboard: {exc}", err=True)
        raise typer.Exit(1) from None
    if refusal:
        typer.echo(f"dashboard: {refusal}", err=True)
        raise typer.Exit(1)
    code = serve(streamlit_command(db_url, host, port))
    # Streamlit exits 0 on SIGTERM/Ctrl-C; a negative code means it was killed.
    raise typer.Exit(code if code >= 0 else 128 - code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
