"""The coordinator's client for the SuperLink's Control API: register, unregister, list nodes.

The same calls `flwr supernode register|unregister|ls` make, done in-process so that the
SuperLink supervisor can poll node status every few seconds without starting a `flwr`
process (≈1 s of CPU) each time. Flower 1.42 pinned: these are its CLI's own building
blocks.
"""

from __future__ import annotations

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
    credential: Path | None = None  # client certificate for a remote control door (mutual TLS)
    timeout: float = 30.0  # seconds a call may wait for its answer

    def _client(self):
        """Flower's Control API client with the interceptors `flwr` uses (Flower's CLI
        helper would add account login, which this SuperLink does not run)."""
        from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

        from server.control_tls import tls_context

        if self.insecure:
            url, verify = f"http://{self.address}", False
        else:
            credential = Path(self.credential).resolve() if self.credential else None
            url, verify = f"https://{self.address}", tls_context(Path(self.root_certificates).resolve(), credential)
        return ControlHttpClient(
            url,
            interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
            verify=verify,
            timeout=self.timeout,
        )

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

    def run_status(self, run_id: int | str) -> str | None:
        """Flower's status of one run ("running", "finished:failed", ...), "" if Flower does
        not know it, None if the SuperLink did not answer (within `timeout`, or with an
        error of its own: a loaded SuperLink is slow, not a lost run)."""
        import httpx
        from flwr.proto.control_pb2 import ListRunsRequest

        client = None
        try:
            client = self._client()
            res = client.ListRuns(ListRunsRequest(run_id=int(run_id)))
        except httpx.HTTPStatusError as err:
            return "" if err.response.status_code == 404 else None
        except httpx.HTTPError:
            return None
        finally:
            if client is not None:
                client.close()
        return next((_status_text(run.status) for run in res.run_dict.values()), "")

    def runs(self) -> dict[int, str]:
        """Run id → Flower's status ("running", "finished:failed", ...) of every run it knows."""
        from flwr.proto.control_pb2 import ListRunsRequest

        res = self._call("ListRuns", ListRunsRequest())
        return {int(run_id): _status_text(run.status) for run_id, run in res.run_dict.items()}


def _status_text(status) -> str:
    """A run's status as `flwr ls` prints it: "running", "finished:failed", ..."""
    return f"{status.status}:{status.sub_status}" if status.sub_status else status.status
