"""The ``fovea-agent`` command: the device side (installing and serving bundles comes next)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fovea's edge agent for Jetson devices."
)


def agent_version() -> str:
    """The installed fovea-edge version."""
    try:
        return version("fovea-edge")
    except PackageNotFoundError:
        return "unknown"


@app.command("version")
def show_version() -> None:
    """Print the agent's version."""
    typer.echo(f"fovea-agent {agent_version()}")


@app.callback()
def _root() -> None:
    """Fovea's edge agent. Bundle install, inference and the HTTP service are not built yet."""


def main() -> None:
    """Entry point of the ``fovea-agent`` console script."""
    app()
