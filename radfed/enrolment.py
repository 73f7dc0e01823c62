"""A clinic's enrolment bundle, and the TLS check a clinic runs before it connects.

The bundle is one JSON file the coordinator hands to a clinic's IT admin: the federation's
CA certificate, the clinic's node key pair (Flower SuperNode authentication), the
SuperLink's address and the clinic's name, with a checksum so a damaged copy is refused.
It holds a private key: it is written 0600 and should travel like a password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509

from radfed.pki import PkiError, fingerprint, load_cert, public_key_of, write_private

FORMAT = "radfed-enrolment-1"
SUFFIX = ".radfed"


class BundleError(RuntimeError):
    """An unusable enrolment bundle; one line naming the file and the fix."""


@dataclass(frozen=True)
class Bundle:
    """What a clinic needs to join: who it is, where to connect, whom to trust."""

    clinic: str
    superlink: str
    ca_pem: str
    private_key: str
    public_key: str
    created_at: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def _body(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(self._body(), sort_keys=True).encode()).hexdigest()


def write_bundle(path: Path, bundle: Bundle) -> Path:
    """Write the bundle readable by its owner only."""
    body = bundle._body()
    body["checksum"] = bundle.checksum()
    write_private(path, (json.dumps(body, indent=1) + "\n").encode())
    return path


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle: format, checksum, CA certificate, key pair."""
    fix = "ask the coordinator for a new one (`coordinator clinic add NAME`)"
    try:
        body = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: no such enrolment bundle; {fix}") from None
    except (OSError, ValueError):
        raise BundleError(f"{path}: not a radfed enrolment bundle (unreadable or not JSON); {fix}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BundleError(
            f"{path}: not a radfed enrolment bundle (format {body.get('format')!r}"
            f" if isinstance(body, dict) else 'none'); {fix}"
        )
    try:
        bundle = Bundle(**{k: str(body[k]) for k in Bundle.__dataclass_fields__})
    except KeyError as missing:
        raise BundleError(f"{path}: enrolment bundle lacks {missing}; {fix}") from None
    if body.get("checksum") != bundle.checksum():
        raise BundleError(f"{path}: enrolment bundle is damaged or was edited (checksum mismatch); {fix}")
    try:
        load_cert(bundle.ca_pem.encode(), f"{path}: the CA certificate")
        derived = public_key_of(bundle.private_key)
    except PkiError as e:
        raise BundleError(str(e)) from None
    except ValueError:
        raise BundleError(f"{path}: the node private key is unreadable; {fix}") from None
    if derived.split()[:2] != bundle.public_key.split()[:2]:
        raise BundleError(f"{path}: the node private key does not match its public key; {fix}")
    return bundle


def install_bundle(bundle: Bundle, folder: Path) -> dict[str, Path]:
    """Unpack a verified bundle into a clinic's node folder: ca.crt, node.key, node.pub."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ca": folder / "ca.crt",
        "key": folder / "node.key",
        "pub": folder / "node.pub",
        "info": folder / "enrolment.json",
    }
    files["ca"].write_text(bundle.ca_pem)
    write_private(files["key"], bundle.private_key.encode())
    files["pub"].write_text(bundle.public_key.strip() + "\n")
    files["info"].write_text(
        json.dumps(
            {
                "clinic": bundle.clinic,
                "superlink": bundle.superlink,
                "fingerprint": bundle.fingerprint,
                "created_at": bundle.created_at,
            },
            indent=1,
        )
        + "\n"
    )
    return files


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _peer_cert(host: str, port: int, timeout: float) -> x509.Certificate | None:
    """The server's certificate without verifying it (to explain a failed verification)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def speaks_tls(address: str, timeout: float = 5.0) -> bool:
    """Whether the server at `address` completes a TLS handshake (any certificate)."""
    host, port = _split(address)
    return _peer_cert(host, port, timeout) is not None


def check_tls(address: str, ca_pem: str, timeout: float = 5.0, now: dt.datetime | None = None) -> str | None:
    """Why a TLS connection to the SuperLink would fail with this CA, or None if it works.

    Distinguishes the cases an IT admin fixes differently: unreachable, plaintext server,
    certificate from another CA, expired, not yet valid (this machine's clock), wrong name.
    """
    host, port = _split(address)
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return f"{address} is unreachable ({e.strerror or e}); check the address, the network and the firewall"
    try:
        with ctx.wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as e:
        return _explain(e, _peer_cert(host, port, timeout), ca_pem, now)
    except (ssl.SSLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        return (
            f"TLS handshake with {address} failed ({reason}); the SuperLink may be running "
            "without TLS (--insecure) or something else answers on that port"
        )
    finally:
        raw.close()


def _explain(
    err: ssl.SSLCertVerificationError, cert: x509.Certificate | None, ca_pem: str, now: dt.datetime | None
) -> str:
    now = now or dt.datetime.now(dt.UTC)
    msg = str(err.verify_message or err)
    if cert is not None and "not yet valid" in msg:
        return (
            f"the SuperLink's certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            f"but this machine's clock says {now:%Y-%m-%d %H:%M} UTC: clock skew; fix the clock (NTP)"
        )
    if cert is not None and "expired" in msg:
        return (
            f"the SuperLink's certificate expired on {cert.not_valid_after_utc:%Y-%m-%d} (this machine's "
            f"clock: {now:%Y-%m-%d}); ask the coordinator to renew it (`coordinator certs init --force`)"
            " or fix the clock"
        )
    if "hostname" in msg or "IP address mismatch" in msg:
        return (
            f"the SuperLink's certificate does not name this address ({msg}); ask the coordinator to "
            "re-create it with `coordinator certs init --hosts NAME,IP`"
        )
    issuer = cert.issuer.rfc4514_string() if cert is not None else "unknown"
    return (
        f"the SuperLink's certificate does not chain to the CA in your enrolment bundle (issuer "
        f"{issuer}): wrong CA or wrong server; ask the coordinator for a current bundle"
    )
