"""`coordinator researcher …`: accounts for the dashboard (who may look at results and submit).

Only a salted scrypt hash of a secret is stored; a generated secret is printed once, on
stdout, and never again. Beyond loopback every dashboard page needs a login; OIDC
accounts (the hospital's identity provider, configured in .streamlit/secrets.toml
[auth]) log in with the provider instead of a secret.

Examples:

    coordinator researcher add alice
    printf '%s\\n' "$SECRET" | coordinator researcher add bob --stdin
    coordinator researcher add carol@hospital.org --oidc
    coordinator researcher add alice --reset
    coordinator researcher list
    coordinator researcher disable alice
    coordinator researcher enable alice
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from radfed.cli_errors import fail as _fail

HELP = "\n\n".join(
    [
        "Dashboard accounts: who may look at results and submit experiments.",
        "Examples:",
        *(f"`{line.strip()}`" for line in __doc__.split("Examples:")[1].strip().splitlines()),
    ]
)
researcher_app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
]
NameArgument = Annotated[str, typer.Argument(help="Login name (or the e-mail address an OIDC provider vouches for).")]


def _researchers(db: str | None):
    from radfed.researchers import Researchers
    from radfed.store import Store, StoreError

    try:
        return Researchers(Store(db))
    except StoreError as e:
        _fail(str(e))


@researcher_app.command("add")
def researcher_add(
    name: NameArgument,
    stdin: Annotated[
        bool,
        typer.Option(
            "--stdin", help="Read the secret from the first line of stdin (12+ characters) instead of generating one."
        ),
    ] = False,
    oidc: Annotated[
        bool,
        typer.Option(
            "--oidc",
            help="An OIDC account: no secret; the identity provider "
            "configured in .streamlit/secrets.toml [auth] vouches for NAME (its e-mail).",
        ),
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="The account exists: new secret, enabled again, failed logins forgotten.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Create a researcher account; a generated secret is printed once (stdout).

    Examples:

    `coordinator researcher add alice`

    `printf '%s\\n' "$SECRET" | coordinator researcher add bob --stdin`

    `coordinator researcher add carol@hospital.org --oidc`

    `coordinator researcher add alice --reset`
    """
    from radfed.researchers import AccountError

    if oidc and stdin:
        _fail("an OIDC account has no secret: leave --stdin out", 2)
    secret = None
    if stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    try:
        given = _researchers(db).add(name, secret, kind="oidc" if oidc else "password", replace=reset)
    except AccountError as e:
        _fail(str(e), 2)
    if oidc:
        err.print(
            f"researcher {name}: OIDC account; logs in with the identity provider", highlight=False, soft_wrap=True
        )
    elif stdin:
        err.print(
            f"researcher {name}: secret from stdin stored (as a salted hash only)", highlight=False, soft_wrap=True
        )
    else:
        err.print(
            f"researcher {name}: this secret is shown once; hand it over like a password:",
            highlight=False,
            soft_wrap=True,
        )
        print(given)


@researcher_app.command("list")
def researcher_list(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Every account: kind, status, last login, failed logins in a row (never a secret).

    Example: `coordinator researcher list --json`
    """
    rows = _researchers(db).accounts()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="researchers (dashboard accounts)")
    columns = ("name", "kind", "status", "created_at", "last_login_at", "failed_logins")
    for col in columns:
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(escape("" if r[c] is None else str(r[c])[:19] if c.endswith("_at") else str(r[c])) for c in columns)
        )
    out.print(table)


@researcher_app.command("disable")
def researcher_disable(name: NameArgument, db: DbOption = None) -> None:
    """Refuse an account's logins; its open dashboard sessions end at their next update.

    Example: `coordinator researcher disable alice`
    """
    from radfed.researchers import AccountError

    try:
        _researchers(db).disable(name)
    except AccountError as e:
        _fail(str(e), 2)
    err.print(f"researcher {name} disabled", highlight=False, soft_wrap=True)


@researcher_app.command("enable")
def researcher_enable(name: NameArgument, db: DbOption = None) -> None:
    """Let a disabled account log in again (and forget its failed logins).

    Example: `coordinator researcher enable alice`
    """
    from radfed.researchers import AccountError

    try:
        _researchers(db).enable(name)
    except AccountError as e:
        _fail(str(e), 2)
    err.print(f"researcher {name} enabled", highlight=False, soft_wrap=True)


def mount(app: typer.Typer) -> None:
    """Add `coordinator researcher` to the coordinator CLI."""
    app.add_typer(researcher_app, name="researcher")
