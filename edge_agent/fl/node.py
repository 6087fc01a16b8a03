"""``fovea-agent node``: the device's Flower SuperNode, pointed at the device root.

Imports neither torch nor Flower: the SuperNode is a separate process (``flower-supernode``)
that runs the ClientApp (``edge_agent.fl.app``) in its own subprocess per round.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeSettings", "find_supernode", "node_config_arg", "run_node", "supernode_command"]


@dataclass(frozen=True)
class NodeSettings:
    """How this device joins a federation."""

    root: Path
    superlink: str
    insecure: bool = False
    root_certificates: Path | None = None
    auth_key: Path | None = None
    site: str | None = None
    threads: int = 2
    port: int = 9094
    trusted_entities: Path | None = None

    def __post_init__(self) -> None:
        host, sep, port = self.superlink.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--superlink {self.superlink!r}: expected HOST:PORT")
        if self.insecure and self.root_certificates is not None:
            raise ValueError("--insecure and --root-certificates exclude each other")
        if not self.insecure and self.root_certificates is None:
            raise ValueError("give --root-certificates (TLS to the SuperLink) or --insecure")
        if self.auth_key is not None and self.insecure:
            raise ValueError("--auth-key (SuperNode authentication) requires TLS, not --insecure")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        for name in ("root_certificates", "auth_key", "trusted_entities"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"--{name.replace('_', '-')}: no file at {path}")


def node_config_arg(config: dict[str, str | int]) -> str:
    """The ``--node-config`` string (``key="value" n=2``) Flower parses as TOML values."""
    parts = []
    for key, value in config.items():
        if isinstance(value, str):
            if '"' in value or "'" in value:
                raise ValueError(f"node config {key}: quotes are not allowed in {value!r}")
            parts.append(f"{key}={json.dumps(value)}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def find_supernode() -> Path:
    """``flower-supernode`` beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "flower-supernode"
    if beside.is_file():
        return beside
    found = shutil.which("flower-supernode")
    if found is None:
        raise FileNotFoundError(
            "flower-supernode not found: install the agent with the fl extra "
            "(pip install 'fovea-edge[agent,fl]')"
        )
    return Path(found)


def supernode_command(settings: NodeSettings, executable: Path | None = None) -> list[str]:
    """The ``flower-supernode`` command line for ``settings``."""
    config: dict[str, str | int] = {"root": str(Path(settings.root).resolve())}
    if settings.site:
        config["site"] = settings.site
    config["threads"] = settings.threads
    cmd = [str(executable or find_supernode()), "--superlink", settings.superlink]
    if settings.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(settings.root_certificates)]
    if settings.auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(settings.auth_key)]
    if settings.trusted_entities is not None:
        cmd += ["--trusted-entities", str(settings.trusted_entities)]
    cmd += ["--port", str(settings.port), "--node-config", node_config_arg(config)]
    return cmd


def run_node(settings: NodeSettings) -> int:
    """Run the SuperNode in the foreground until it exits; returns its exit status.

    SIGTERM/SIGINT to this process stop the SuperNode too (systemd stops the unit's main
    process; an orphaned SuperNode would keep its port and keep taking rounds).
    """
    if not Path(settings.root).is_dir():
        raise ValueError(f"--root {settings.root}: no such device root")
    executable = find_supernode()
    env = dict(os.environ)
    # the SuperNode starts flwr-clientapp by name: the venv's bin must be on PATH
    env["PATH"] = os.pathsep.join([str(executable.parent), env.get("PATH", "")])
    child = subprocess.Popen(supernode_command(settings, executable), env=env)

    def _stop(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled above
                child.terminate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
