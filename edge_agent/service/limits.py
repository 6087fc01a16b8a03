"""The agent's process limits: as many open files as its supervisor allows (sockets, images,
SQLite connections and model files all count against RLIMIT_NOFILE)."""

from __future__ import annotations

import resource
from collections.abc import Callable

UNLIMITED_CAP = 1 << 20
"""What an unlimited hard limit is raised to (Linux's default ``fs.nr_open``)."""


def raise_open_files_limit(log: Callable[[str], None] = lambda s: None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit and log both; the (soft, hard) now.

    systemd starts services with a soft limit of 1024 unless the unit says otherwise (the
    ``fovea flash`` unit sets ``LimitNOFILE``); a refusal leaves the limit as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log(f"open files: soft limit {soft} (hard {hard}); could not raise it: {exc}")
            return soft, hard
        log(f"open files: soft limit raised from {soft} to {target} (hard {hard})")
        return target, hard
    log(f"open files: soft limit {soft} (hard {hard})")
    return soft, hard


__all__ = ["UNLIMITED_CAP", "raise_open_files_limit"]
