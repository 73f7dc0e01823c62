"""The coordinator's client for the SuperLink's Control API: register, unregister, list nodes.

The same calls `flwr supernode register|unregister|ls` make, done in-process so that the
SuperLink supervisor can poll node status every few seconds without starting a `flwr`
process (≈1 s of CPU) each time. Flower 1.42 pinned: these are its CLI's own building
blocks.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path


class ControlError(RuntimeError):
    """A Control API call that failed; one line."""


@dataclass
class ControlClient:
    """Control API of one SuperLink (TLS with the federation CA, or plaintext on loopback)."""

    address: str
    root_certificates: Path | None = None
    insecure: bool = False
    flwr_home: Path | None = None
    credential: Path | None = None  # client certificate for a remote control door (mutual TLS)

    def _client(self):
        from flwr.cli.typing import SuperLinkConnection
        from flwr.cli.utils import init_http_client_from_connection

        if self.credential:
            from server.control_tls import use_credential

            use_credential(Path(self.credential))
        if self.flwr_home:
            self.flwr_home.mkdir(parents=True, exist_ok=True)
            os.environ["FLWR_HOME"] = str(self.flwr_home)
        conn = SuperLinkConnection(
            name="radfed",
            address=self.address,
            insecure=self.insecure,
            root_certificates=None if self.insecure else str(Path(self.root_certificates).resolve()),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # "Using SuperLink: ..." banner
            return init_http_client_from_connection(conn)

    def _call(self, method: str, request):
        client = None
        try:
            client = self._client()
            return getattr(client, method)(request=request)
        except SystemExit as e:  # flwr's helpers exit on connection problems
            raise ControlError(f"SuperLink {self.address} Control API: exit {e.code}") from None
        except Exception as e:  # noqa: BLE001 - gRPC/HTTP errors become one line
            detail = " ".join(str(e).split())[:200]
            raise ControlError(f"SuperLink {self.address} Control API {method} failed: {detail}") from None
        finally:
            if client is not None:
                client.close()

    def register(self, public_key_openssh: str, name: str) -> int:
        """Register a clinic's node key; returns the node id the SuperLink assigned."""
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key
        from flwr.proto.control_pb2 import RegisterNodeRequest
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        key = public_key_to_bytes(load_ssh_public_key(public_key_openssh.encode()))
        res = self._call("RegisterNode", RegisterNodeRequest(public_key=key, name=name))
        if not res.node_id:
            raise ControlError(f"SuperLink {self.address} did not register clinic {name}")
        return int(res.node_id)

    def unregister(self, node_id: int) -> None:
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        self._call("UnregisterNode", UnregisterNodeRequest(node_id=int(node_id)))

    def nodes(self) -> dict[int, str]:
        """Node id → status ('registered', 'online', 'offline', 'unregistered')."""
        from flwr.proto.control_pb2 import ListNodesRequest

        res = self._call("ListNodes", ListNodesRequest())
        return {int(n.node_id): str(n.status) for n in res.nodes_info}

    def runs(self) -> dict[int, str]:
        """Run id → Flower's status ("running", "finished:failed", ...) of every run it knows."""
        from flwr.proto.control_pb2 import ListRunsRequest

        res = self._call("ListRuns", ListRunsRequest())
        out = {}
        for run_id, run in res.run_dict.items():
            status = run.status
            out[int(run_id)] = f"{status.status}:{status.sub_status}" if status.sub_status else status.status
        return out
