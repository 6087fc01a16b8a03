"""A whole federation on this machine: a SuperLink, one SuperNode per device root and ``flwr run``.

For the demo and rehearsals before real devices: everything listens on 127.0.0.1 without TLS
(loopback only), the SuperNodes are started the way devices start them (``fovea-agent node``),
and the run is this project's Flower App. Every process starts in its own session and is stopped
by signalling its process group, so the ClientApps and the ServerApp that Flower starts go with
it; nothing that was not started here is ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["APP_DIR", "LocalNode", "LoopbackFederation", "RunOutcome", "free_port"]

APP_DIR = Path(__file__).resolve().parents[2]
"""The project root: its pyproject.toml declares the Flower App that ``flwr run`` packs."""
_CONNECTION = "loopback"
_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LocalNode:
    """One device of the local federation: its name (used as its site) and its device root."""

    name: str
    root: Path
    threads: int = 1

    def __post_init__(self) -> None:
        if not Path(self.root).is_dir():
            raise ValueError(f"device {self.name}: no device root at {self.root}")


@dataclass(frozen=True)
class RunOutcome:
    """How ``flwr run`` ended: Flower's run status (``finished:completed`` ...) and its log."""

    run_id: str | None
    status: str
    details: str
    log: Path
    seconds: float

    @property
    def completed(self) -> bool:
        """Whether the ServerApp returned normally."""
        return self.status == "finished:completed"


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class LoopbackFederation:
    """Start with :meth:`start`, run with :meth:`run`, stop with :meth:`close` (or ``with``)."""

    def __init__(self, work: Path, app_dir: Path = APP_DIR) -> None:
        self.work = Path(work).resolve()
        self.app_dir = app_dir
        self.port = free_port()
        self._procs: list[_Proc] = []
        home = self.work / "flwr-home"  # outside the App dir: `flwr run` packs the App dir
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{_CONNECTION}"\n\n[superlink.{_CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.env = {
            **os.environ,
            "FLWR_HOME": str(home),
            # SuperLink and SuperNode start flower-superexec / flwr-clientapp by name
            "PATH": os.pathsep.join([str(_BIN), os.environ.get("PATH", "")]),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
        }

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, cmd: list[str]) -> _Proc:
        log = self.work / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                start_new_session=True,
            )  # fmt: skip
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def start(self, nodes: list[LocalNode], timeout: float = 60.0) -> None:
        """Start the SuperLink (state in ``work/superlink.db``), then one SuperNode per device."""
        link = self._spawn("superlink", [
            str(_BIN / "flower-superlink"), "--insecure",
            "--disable-runtime-dependency-installation",
            "--database", str(self.work / "superlink.db"),
            "--host", "127.0.0.1", "--port", str(self.port),
        ])  # fmt: skip
        _wait_port(self.port, link, timeout)
        for node in nodes:
            self._spawn(f"node-{node.name}", [
                str(_BIN / "fovea-agent"), "node", "--root", str(Path(node.root).resolve()),
                "--superlink", f"127.0.0.1:{self.port}", "--insecure", "--site", node.name,
                "--threads", str(node.threads), "--port", str(free_port()),
            ])  # fmt: skip

    def run(
        self,
        run_config: Mapping[str, bool | int | float | str],
        timeout: float = 600.0,
        on_poll: Callable[[], None] | None = None,
    ) -> RunOutcome:
        """Run the App with ``run_config`` until it ends (``on_poll`` is called every second)."""
        config_file = self.work / "run_config.toml"
        config_file.write_text(_toml(run_config))
        started = time.monotonic()
        proc = self._spawn("flwr-run", [
            str(_BIN / "flwr"), "run", str(self.app_dir), _CONNECTION, "--stream",
            "--run-config", str(config_file),
        ])  # fmt: skip
        while proc.popen.poll() is None:
            if time.monotonic() - started > timeout:
                self._stop(proc)
                break
            if on_poll is not None:
                on_poll()
            time.sleep(1.0)
        text = proc.log.read_text(errors="replace")
        run_id = None
        for line in text.splitlines():
            if "Successfully started run" in line:
                run_id = line.rsplit(" ", 1)[-1].strip()
        status, details = self._status(run_id) if run_id else ("not-started", text[-2000:])
        return RunOutcome(run_id, status, details, proc.log, time.monotonic() - started)

    def _status(self, run_id: str) -> tuple[str, str]:
        out = subprocess.run(
            [str(_BIN / "flwr"), "ls", _CONNECTION, "--run-id", run_id, "--format", "json"],
            capture_output=True, text=True, env=self.env, timeout=60,
        )  # fmt: skip
        try:
            run = json.loads(out.stdout)["runs"][0]
            return str(run["status"]), str(run.get("status-details", ""))
        except (ValueError, KeyError, IndexError):
            return "unknown", (out.stdout + out.stderr)[-2000:]

    def logs(self, tail: int = 3000) -> str:
        """The end of every process log (for error messages)."""
        return "\n".join(
            f"===== {p.name}\n{p.log.read_text(errors='replace')[-tail:]}" for p in self._procs
        )

    @staticmethod
    def _stop(proc: _Proc, wait: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=wait)
        # children (SuperExec, ClientApps) notice their parent is gone only by polling
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=wait)

    def close(self) -> None:
        """Stop every process started here: the SuperNodes first, then the SuperLink."""
        for proc in reversed(self._procs):
            self._stop(proc)
        self._procs.clear()


def _toml(config: Mapping[str, bool | int | float | str]) -> str:
    lines = []
    for key, value in config.items():
        text = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _wait_port(port: int, proc: _Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            text = proc.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not listen on 127.0.0.1:{port} within {timeout:g} s")
