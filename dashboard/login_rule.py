"""The dashboard's login rule, without Streamlit: who must log in, and whether to serve at all.

On loopback (127.0.0.1, localhost, ::1) the dashboard is only reachable from this
machine, so reading stays open as before; beyond loopback every page needs a login.
A dashboard beyond loopback that nobody could log in to (no researcher account, no
OIDC identity provider) is refused before Streamlit starts (dashboard/cli.py): it
would only ever show a login form, and the fix belongs in one clear line.
Streamlit's own `--server.address` is the truth: unset, Streamlit listens on every
interface, so unset counts as beyond loopback.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Sequence
from pathlib import Path

from radfed.store import default_database_url

LOOPBACK_NAMES = ("localhost",)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for anything else, unset included."""
    if not address:
        return False
    host = address.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secrets_files(cwd: Path | None = None) -> list[Path]:
    """Where Streamlit looks for secrets.toml by default: the user's, then the working folder's."""
    return [Path("~/.streamlit/secrets.toml").expanduser(), (cwd or Path.cwd()) / ".streamlit" / "secrets.toml"]


def oidc_in(auth: object) -> bool:
    """True when an `[auth]` table configures Streamlit's OIDC login (st.login): a redirect
    URI, a cookie secret, and a client id (at the top or in a named provider's table)."""
    if not isinstance(auth, dict) or not auth.get("redirect_uri") or not auth.get("cookie_secret"):
        return False
    return bool(auth.get("client_id")) or any(isinstance(v, dict) and v.get("client_id") for v in auth.values())


def oidc_configured(files: Sequence[Path] | None = None) -> bool:
    """Whether one of Streamlit's secrets files configures OIDC (see `oidc_in`)."""
    for path in files if files is not None else secrets_files():
        try:
            table = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        if oidc_in(table.get("auth")):
            return True
    return False


def serve_refusal(host: str, has_accounts: bool, has_oidc: bool, db_hint: str) -> str | None:
    """Why the dashboard must not serve on `host`, in one line with the fix; None when it may."""
    if is_loopback(host) or has_accounts or has_oidc:
        return None
    return (
        f"refusing to serve on {host}: beyond loopback every page needs a login, and there is no "
        f"researcher account and no OIDC provider. Fix: `coordinator researcher add NAME{db_hint}` "
        "(or configure OIDC in .streamlit/secrets.toml [auth]), or serve on --host 127.0.0.1"
    )


def database_url(argv: Sequence[str]) -> str:
    """`--db URL` / `--db=URL` from the script's arguments, else DATABASE_URL or the default
    (as dashboard/app.py reads them: the login check opens the same database)."""
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg.split("=", 1)[1]
    return default_database_url()
