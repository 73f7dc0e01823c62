"""Certificates and node keys for a federation: a private CA, the SuperLink's TLS
certificate, and each clinic's node key pair in the format Flower's SuperNode
authentication uses (EC P-384, OpenSSH encoding).

Everything is made with the `cryptography` package; private keys are written readable by
their owner only. Functions here are pure apart from the explicit file writes, so the
coordinator's CLI, the demo and the tests share one implementation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest lifetime common TLS clients accept for a server certificate
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


class PkiError(RuntimeError):
    """A certificate or key problem; one line naming the file and the fix."""


@dataclass(frozen=True)
class CertPaths:
    """The files `coordinator certs init` writes into its folder."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.ca_key, self.server_cert, self.server_key))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_ca(
    name: str = "radfed federation CA", days: int = CA_DAYS, not_before: dt.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that signs only the SuperLink's certificate."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: list[str],
    days: int = SERVER_DAYS,
    not_before: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS certificate, valid for every name/address clinics will dial."""
    key = _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_client_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str, days: int = SERVER_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A coordinator credential: a client certificate the control door accepts (mutual TLS)."""
    key = _key()
    start = _now() - dt.timedelta(minutes=5)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "radfed coordinator"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def issue_credential(paths: CertPaths, name: str, out: Path) -> tuple[Path, Path]:
    """Write `NAME.pem` and `NAME.key` (0600) signed by the federation CA into `out`."""
    if not paths.complete():
        raise PkiError(f"no federation CA in {paths.folder}; run `coordinator certs init` first")
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    ca_cert = load_cert(paths.ca_cert.read_bytes(), str(paths.ca_cert))
    key, cert = make_client_cert(ca_key, ca_cert, name)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def init_certs(
    folder: Path,
    hosts: list[str] | None = None,
    force: bool = False,
    days: int = SERVER_DAYS,
    not_before: dt.datetime | None = None,
) -> CertPaths:
    """Create the CA and the SuperLink certificate in `folder` (refuses to overwrite)."""
    paths = CertPaths(Path(folder))
    if paths.ca_cert.exists() and not force:
        raise PkiError(
            f"{paths.ca_cert} already exists; clinics enrolled with it would be cut off. "
            "Pass --force to make a new CA (and re-enrol every clinic)"
        )
    hosts = list(dict.fromkeys(hosts or DEFAULT_HOSTS))
    ca_key, ca_cert = make_ca(not_before=not_before)
    key, cert = make_server_cert(ca_key, ca_cert, hosts, days=days, not_before=not_before)
    paths.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.folder, 0o700)
    write_private(paths.ca_key, _pem_key(ca_key))
    write_private(paths.server_key, _pem_key(key))
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def node_keypair() -> tuple[str, str]:
    """A clinic's node key pair as Flower's SuperNode auth reads it: (private, public) OpenSSH."""
    key = _key()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def public_key_of(private_openssh: str) -> str:
    """The OpenSSH public key of an OpenSSH private key (raises ValueError if unreadable)."""
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def fingerprint(public_openssh: str) -> str:
    """A short, stable name for a public key (what lists and audit rows show)."""
    return "sha256:" + hashlib.sha256(public_openssh.strip().encode()).hexdigest()[:16]


def load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PkiError(f"{what} is not a PEM certificate; re-create it with `coordinator certs init`") from None


def cert_summary(cert: x509.Certificate) -> dict[str, str]:
    """Subject, validity and SANs, for `coordinator certs show` and error lines."""
    try:
        sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "hosts": ",".join(sans),
        "sha256": cert.fingerprint(hashes.SHA256()).hex()[:32],
    }
