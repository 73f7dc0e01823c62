"""Coordinator credentials on the client side: Flower's Control API client with a client
certificate, for a control door off loopback (mutual TLS, server.doors).

Flower 1.42's `flwr` CLI and Control API client verify the SuperLink's certificate but
cannot present one of their own. `use_credential` makes every Flower protobuf-over-HTTP
client in this process present the certificate and key named in `RADFED_CONTROL_CERT`
(the key beside it, `NAME.key`); `python -m server.control_tls ARGS` is `flwr ARGS` with
that in place, which is how `coordinator run --credential` submits runs.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path

CERT_ENV = "RADFED_CONTROL_CERT"


def key_of(cert: Path) -> Path:
    """The private key written beside a credential (`coordinator certs credential`)."""
    return cert.with_suffix(".key")


def tls_context(root_certificates: bytes | str | Path | None, credential: Path | None = None) -> ssl.SSLContext:
    """A client TLS context trusting `root_certificates` (a PEM file's path or its bytes;
    None: the system's), presenting `credential` (and the key beside it) if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if isinstance(root_certificates, (str, Path)):
        context.load_verify_locations(cafile=str(root_certificates))
    elif root_certificates is not None:
        context.load_verify_locations(cadata=root_certificates.decode("ascii"))
    if credential is not None:
        context.load_cert_chain(str(credential), str(key_of(credential)))
    return context


def use_credential(cert: Path | None = None) -> bool:
    """Present `cert` (or $RADFED_CONTROL_CERT) on every Control API connection; False if none."""
    path = cert or (Path(os.environ[CERT_ENV]) if os.environ.get(CERT_ENV) else None)
    if path is None:
        return False
    from flwr.supercore.protobuf.client import ProtobufClient

    original = ProtobufClient.from_server_address.__func__  # type: ignore[attr-defined]

    def from_server_address(cls, server_address, insecure, root_certificates, interceptors, *, retry_invoker=None):
        if insecure:
            return original(cls, server_address, insecure, root_certificates, interceptors, retry_invoker=retry_invoker)
        context = tls_context(root_certificates, path)
        return cls(f"https://{server_address}", interceptors=interceptors, verify=context, retry_invoker=retry_invoker)

    ProtobufClient.from_server_address = classmethod(from_server_address)  # type: ignore[method-assign]
    return True


def main() -> None:
    """`flwr` with the coordinator credential of $RADFED_CONTROL_CERT."""
    use_credential()
    from flwr.cli.app import app

    sys.argv[0] = "flwr"
    app()


if __name__ == "__main__":
    main()
