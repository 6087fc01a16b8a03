"""This agent's version: the installed ``fovea-edge`` distribution's, or ``'0'``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def agent_version() -> str:
    """The version of this agent (the installed fovea-edge distribution; '0' if not installed).

    '0' rather than a word, so that comparing it with a bundle's ``min_agent_version`` still
    works (an uninstalled source tree counts as older than any release).
    """
    try:
        return version("fovea-edge")
    except PackageNotFoundError:
        return "0"


__all__ = ["agent_version"]
