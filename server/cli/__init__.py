"""The ``fovea`` command: one module per command group, assembled in :mod:`server.cli.app`."""

from server.cli.app import app, main

__all__ = ["app", "main"]
