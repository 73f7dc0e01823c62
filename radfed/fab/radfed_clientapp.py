"""Entry point Flower loads at each clinic: the ClientApp installed with radfed."""

from client_node.app import app

__all__ = ["app"]
