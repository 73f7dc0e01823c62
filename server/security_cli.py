"""`coordinator certs …`, `coordinator clinic …`, `coordinator audit`: onboarding and its record.

Examples:

    coordinator certs init --hosts coordinator.example.org,10.0.0.5
    coordinator certs credential alice --out ~/.radfed/credentials
    coordinator clinic add clinic-a --superlink coordinator.example.org:9092
    coordinator clinic list
    coordinator clinic revoke clinic-a
    coordinator clinic readmit clinic-a
    coordinator audit --kind excluded
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from radfed.cli_errors import fail as _fail

certs_app = typer.Typer(
    help="The federation's private CA and the SuperLink's TLS certificate.", no_args_is_help=True, add_completion=False
)
clinic_app = typer.Typer(
    help="Enrol, list and revoke clinics (node keys for SuperNode authentication).",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

CertsOption = Annotated[Path | None, typer.Option("--certs", help="Certificate folder (default ~/.radfed/pki).")]
DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $DATABASE_URL or ~/.radfed/radfed.db).")
]


def _certs(folder: Path | None):
    from radfed.pki import CertPaths
    from server.superlink import default_certs

    return CertPaths(folder or default_certs())


def _registry(db: str | None):
    from radfed.audit import Registry
    from radfed.store import Store, StoreError

    try:
        return Registry(Store(db))
    except StoreError as e:
        _fail(str(e))


@certs_app.command("init")
def certs_init(
    hosts: Annotated[str, typer.Option(help="Comma-separated names/IPs clinics dial (loopback is always added).")] = "",
    certs: CertsOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing CA (every clinic must be re-enrolled).")] = False,
    days: Annotated[int, typer.Option(min=1, help="Validity of the SuperLink certificate in days.")] = 825,
) -> None:
    """Create the federation's CA and the SuperLink's certificate (private keys 0600).

    Example: `coordinator certs init --hosts coordinator.example.org,10.0.0.5`
    """
    from radfed.pki import DEFAULT_HOSTS, PkiError, cert_summary, init_certs, load_cert

    names = [h.strip() for h in hosts.split(",") if h.strip()] + list(DEFAULT_HOSTS)
    try:
        paths = init_certs(_certs(certs).folder, names, force=force, days=days)
    except PkiError as e:
        _fail(str(e))
    info = cert_summary(load_cert(paths.server_cert.read_bytes(), str(paths.server_cert)))
    err.print(
        f"CA and SuperLink certificate written to {paths.folder} (valid until {info['not_after']}, "
        f"hosts {info['hosts']})",
        highlight=False,
        soft_wrap=True,
    )


@certs_app.command("show")
def certs_show(
    certs: CertsOption = None, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
) -> None:
    """Show the CA and SuperLink certificates: subject, validity, hosts, fingerprint.

    Example: `coordinator certs show --json`
    """
    from radfed.pki import cert_summary, load_cert

    paths = _certs(certs)
    if not paths.complete():
        _fail(f"no certificates in {paths.folder}; run `coordinator certs init` first")
    info = {
        name: cert_summary(load_cert(p.read_bytes(), str(p)))
        for name, p in (("ca", paths.ca_cert), ("superlink", paths.server_cert))
    }
    print(json.dumps(info, indent=2)) if as_json else out.print_json(data=info)


@certs_app.command("credential")
def certs_credential(
    name: Annotated[str, typer.Argument(help="Who holds it (letters, digits, '-', '_'), e.g. the engineer.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for NAME.pem and NAME.key (0600).")] = Path("."),
    certs: CertsOption = None,
) -> None:
    """Issue a coordinator credential: a client certificate for an off-loopback control door.

    `coordinator superlink --control-host ADDR` (not loopback) serves the Control and
    Runtime APIs only to clients presenting a certificate from the federation CA; pass it
    to `coordinator run --credential NAME.pem`. Hand it over like a password.

    Examples:

    `coordinator certs credential alice --out ~/.radfed/credentials`

    `coordinator run experiment.toml --control 10.0.0.5:9093 --credential ~/.radfed/credentials/alice.pem`
    """
    from radfed.pki import PkiError, issue_credential
    from server.clinics import NAME

    if not NAME.match(name):
        _fail(f"credential name '{name}' must be 1-63 letters, digits, '-' or '_'", 2)
    try:
        cert, key = issue_credential(_certs(certs), name, out_dir)
    except PkiError as e:
        _fail(str(e))
    err.print(f"coordinator credential {cert} with key {key} (0600)", highlight=False, soft_wrap=True)


@clinic_app.command("add")
def clinic_add(
    name: Annotated[str, typer.Argument(help="The clinic's name (letters, digits, '-', '_').")],
    superlink: Annotated[
        str, typer.Option(help="Address HOST:PORT clinics dial (must be in the certificate).")
    ] = "127.0.0.1:9092",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Bundle file or folder (default ./NAME.radfed).")
    ] = None,
    certs: CertsOption = None,
    db: DbOption = None,
) -> None:
    """Enrol a clinic: write its bundle (CA, node key pair, address) and register its key.

    The bundle holds the clinic's private key: hand it over like a password. A running
    SuperLink registers the key within seconds; otherwise when it starts.

    Example: `coordinator clinic add clinic-a --superlink coordinator.example.org:9092`
    """
    from server.clinics import EnrolmentError, add_clinic

    try:
        path = add_clinic(_registry(db), name, superlink, _certs(certs), out_path)
    except EnrolmentError as e:
        _fail(str(e))
    err.print(
        f"enrolled clinic [bold]{name}[/]: bundle {path} (0600); at the clinic run "
        f"`client-node start --bundle {path.name} --data DIR`",
        highlight=False,
        soft_wrap=True,
    )


@clinic_app.command("readmit")
def clinic_readmit(
    name: Annotated[str, typer.Argument(help="The revoked clinic to let back in.")],
    superlink: Annotated[
        str, typer.Option(help="Address HOST:PORT clinics dial (must be in the certificate).")
    ] = "127.0.0.1:9092",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Bundle file or folder (default ./NAME.radfed).")
    ] = None,
    certs: CertsOption = None,
    db: DbOption = None,
) -> None:
    """Re-admit a revoked clinic: a new key pair and bundle under the same name.

    Its old key stays refused; hand over the new bundle like a password.

    Example: `coordinator clinic readmit clinic-a --superlink coordinator.example.org:9092`
    """
    from server.clinics import EnrolmentError, readmit_clinic

    try:
        path = readmit_clinic(_registry(db), name, superlink, _certs(certs), out_path)
    except EnrolmentError as e:
        _fail(str(e))
    err.print(
        f"re-admitted clinic [bold]{name}[/] with a new key: bundle {path} (0600); at the clinic run "
        f"`client-node start --bundle {path.name} --data DIR`",
        highlight=False,
        soft_wrap=True,
    )


@clinic_app.command("list")
def clinic_list(
    db: DbOption = None, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
) -> None:
    """Every enrolled clinic with its key fingerprint, status and SuperLink node id.

    Example: `coordinator clinic list --json`
    """
    rows = [
        {
            "name": c.name,
            "status": c.status,
            "fingerprint": c.fingerprint,
            "node_id": c.node_id,
            "enrolled_at": c.enrolled_at.isoformat(),
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        }
        for c in _registry(db).clinics()
    ]
    _print_rows(rows, ("name", "status", "fingerprint", "node_id", "enrolled_at"), "clinics", as_json)


@clinic_app.command("revoke")
def clinic_revoke(name: Annotated[str, typer.Argument(help="The clinic to cut off.")], db: DbOption = None) -> None:
    """Revoke a clinic: its key is unregistered and it can no longer connect.

    Takes effect within seconds on a running SuperLink (its supervisor unregisters the key).

    Example: `coordinator clinic revoke clinic-a`
    """
    from server.clinics import EnrolmentError, revoke_clinic

    try:
        revoke_clinic(_registry(db), name)
    except EnrolmentError as e:
        _fail(str(e))
    err.print(f"revoked clinic [bold]{name}[/]", highlight=False)


def audit(
    db: DbOption = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind of event (e.g. excluded, connected).")] = None,
    clinic: Annotated[str | None, typer.Option(help="Only this clinic's events.")] = None,
    researcher: Annotated[
        str | None,
        typer.Option(help="Only this researcher's events (logins, downloads, submissions and their review)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """The audit trail: enrolments, revocations, connections, contributions, exclusions;
    researchers' logins, downloads, submissions and the coordinator's approvals.

    Examples:

    `coordinator audit --kind excluded --json`

    `coordinator audit --researcher alice`
    """
    from radfed.audit import EVENT_KINDS

    if kind and kind not in EVENT_KINDS:
        _fail(f"unknown event kind '{kind}'; one of: {', '.join(EVENT_KINDS)}", 2)
    rows = _registry(db).events(kind=kind, clinic=clinic, researcher=researcher)
    columns = ("at", "kind", "clinic", "node_id", "run", "round", "detail")
    if any(r["researcher"] for r in rows):
        columns = ("at", "kind", "researcher", "clinic", "node_id", "run", "round", "detail")
    _print_rows(rows, columns, "audit trail", as_json)


def _print_rows(rows: list[dict], columns: tuple[str, ...], title: str, as_json: bool) -> None:
    """Rows as JSON (every field) or as a table of `columns` (None shown empty)."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for r in rows:  # escaped: a name typed into the dashboard's login form is in the trail
        table.add_row(*(escape(str(r[c])) if r[c] is not None else "" for c in columns))
    out.print(table)


def mount(app: typer.Typer) -> None:
    """Attach these commands to `coordinator`."""
    app.add_typer(certs_app, name="certs")
    app.add_typer(clinic_app, name="clinic")
    app.command("audit")(audit)
