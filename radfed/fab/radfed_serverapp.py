"""Entry point Flower loads on the coordinator: the ServerApp installed with radfed."""

from server.app import app

__all__ = ["app"]
