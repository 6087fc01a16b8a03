"""The ``fovea`` command: one module per command group, assembled in :mod:`server.cli.fovea`."""

from server.cli.fovea import app, main

__all__ = ["app", "main"]
