"""Real Flower processes on 127.0.0.1 for the federation tests: SuperLink, SuperNodes, ``flwr run``.

Every process starts in its own session (``start_new_session``) and is stopped by killing its
process group, so the SuperExec and ClientApp children go with it; only the processes this
harness started are ever signalled. SuperNodes talk to the SuperLink through :class:`WireTap`, a
recording HTTP proxy, so a test can inflate every message a device sent and check what crossed
the wire.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Federation", "NodeSpec", "RunOutcome", "WireTap", "free_port", "run_config_arg"]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_config_arg(config: Mapping[str, Any]) -> str:
    """``--run-config`` text: TOML values (strings quoted, booleans lower case)."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool):
            parts.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, str | Path):
            parts.append(f"{key}={json.dumps(str(value))}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class WireTap:
    """A recording reverse proxy in front of the SuperLink's Fleet API (HTTP/1.1, protobuf)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.records: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with tap._lock:
                    tap.records.append((self.path, body))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                conn = http.client.HTTPConnection("127.0.0.1", tap.upstream_port, timeout=120)
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data, status, got = response.read(), response.status, response.getheaders()
                except OSError:
                    self.send_response(502)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                finally:
                    conn.close()
                self.send_response(status)
                for key, value in got:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "date", "server"):  # fmt: skip
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def paths(self) -> set[str]:
        """Every Fleet API path the nodes called."""
        with self._lock:
            return {p for p, _ in self.records}

    def sent_messages(self) -> list[Any]:
        """Every message the nodes pushed, inflated (``flwr.app.Message``), oldest first."""
        from flwr.proto.fleet_pb2 import PushMessagesRequest
        from flwr.proto.message_pb2 import PushObjectRequest
        from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

        with self._lock:
            records = list(self.records)
        objects: dict[str, bytes] = {}
        roots: list[str] = []
        for path, body in records:
            if path.endswith("/push-object"):
                req = PushObjectRequest()
                req.ParseFromString(body)
                objects[req.object_id] = req.object_content
            elif path.endswith("/push-messages"):
                msgs = PushMessagesRequest()
                msgs.ParseFromString(body)
                roots += [tree.object_id for tree in msgs.message_object_trees]
        return [
            inflate_object_from_contents(root, dict(objects), keep_object_contents=True)
            for root in roots
        ]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class NodeSpec:
    """One device: its root, site name and an optional test fault (``nan`` | ``scale``)."""

    name: str
    root: Path
    fault: str | None = None


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass(frozen=True)
class RunOutcome:
    """How a ``flwr run`` ended: Flower's run status (``finished:completed`` ...) and the log."""

    run_id: str | None
    status: str
    details: str
    log: str
    seconds: float

    @property
    def completed(self) -> bool:
        """Whether the ServerApp returned normally."""
        return self.status == "finished:completed"


@dataclass
class Federation:
    """A SuperLink (+ wire tap) and SuperNodes on 127.0.0.1, all under ``work``."""

    work: Path
    env: dict[str, str] = field(default_factory=dict)
    link_port: int = 0
    tap: WireTap | None = None
    _link: _Proc | None = None
    _nodes: dict[str, _Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.home = self.work / "flwr-home"  # outside the App dir: `flwr run .` packs the App
        self.home.mkdir(exist_ok=True)
        self.link_port = self.link_port or free_port()
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "e2e"\n\n[superlink.e2e]\n'
            f'address = "127.0.0.1:{self.link_port}"\ninsecure = true\n'
        )
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "OMP_NUM_THREADS": "1",
            **self.env,
        }

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: Mapping[str, str] | None = None) -> _Proc:
        log = self.work / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env or self.env),
                cwd=self.work, start_new_session=True,
            )  # fmt: skip
        return _Proc(name, popen, log)

    @staticmethod
    def _stop(proc: _Proc, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        try:
            proc.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(timeout=wait)
        # SuperExec children notice their parent is gone by polling: end the group for sure
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)

    def start_superlink(self) -> None:
        """Start the SuperLink (state in ``work/superlink.db``) and the tap in front of it."""
        cmd = [str(BIN / "flower-superlink"), "--insecure",
               "--disable-runtime-dependency-installation",
               "--database", str(self.work / "superlink.db"),
               "--host", "127.0.0.1", "--port", str(self.link_port)]  # fmt: skip
        self._link = self._spawn("superlink", cmd)
        _wait_port(self.link_port, self._link, 60)
        if self.tap is None:
            self.tap = WireTap(self.link_port)

    def stop_superlink(self, sig: int = signal.SIGKILL) -> None:
        """Stop the SuperLink and everything it started (the ServerApp among them)."""
        if self._link is not None:
            self._stop(self._link, sig)
            self._link = None

    def start_node(self, spec: NodeSpec, *, via_agent_cli: bool = True) -> None:
        """Start a SuperNode for ``spec``: through ``fovea-agent node`` unless it has a fault
        (a fault needs the test-only mod and a node config key the agent's CLI does not offer)."""
        assert self.tap is not None, "start the SuperLink first"
        port = free_port()
        superlink = f"127.0.0.1:{self.tap.port}"
        env = dict(self.env)
        if via_agent_cli and spec.fault is None:
            cmd = [str(BIN / "fovea-agent"), "node", "--root", str(spec.root),
                   "--superlink", superlink, "--insecure", "--site", spec.name,
                   "--threads", "1", "--port", str(port)]  # fmt: skip
        else:
            from edge_agent.fl.node import node_config_arg

            config: dict[str, str | int] = {"root": str(spec.root), "site": spec.name,
                                            "threads": 1}  # fmt: skip
            if spec.fault:  # the test-only mod in this directory poisons the reply
                config["fault"] = spec.fault
                env["FOVEA_FL_CLIENT_MODS"] = "fl_fault_mod:fault_mod"
                env["PYTHONPATH"] = os.pathsep.join(
                    [str(Path(__file__).parent), env.get("PYTHONPATH", "")]
                )
            cmd = [str(BIN / "flower-supernode"), "--insecure", "--superlink", superlink,
                   "--port", str(port), "--node-config", node_config_arg(config)]  # fmt: skip
        self._nodes[spec.name] = self._spawn(f"node-{spec.name}", cmd, env)

    def kill_node(self, name: str) -> None:
        """SIGKILL a SuperNode and its children (a device losing power)."""
        self._stop(self._nodes.pop(name), signal.SIGKILL)

    def node_log(self, name: str) -> str:
        """What a SuperNode printed so far."""
        return self._nodes[name].text()

    def node_id(self, name: str, timeout: float = 60) -> int:
        """The node id the SuperLink gave a SuperNode (from its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"SuperNode ID: (\d+)", self.node_log(name))
            if found:
                return int(found.group(1))
            time.sleep(0.2)
        raise RuntimeError(f"node {name} has no id after {timeout:g} s:\n{self.node_log(name)}")

    def wait_for_log(self, name: str, needle: str, count: int = 1, timeout: float = 120) -> None:
        """Wait until ``needle`` occurs ``count`` times in a SuperNode's log."""
        deadline = time.monotonic() + timeout
        while self.node_log(name).count(needle) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name}: no {needle!r} x{count} in {timeout:g} s")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop every process this federation started, and the tap."""
        for name in list(self._nodes):
            self._stop(self._nodes.pop(name))
        self.stop_superlink(signal.SIGTERM)
        if self.tap is not None:
            self.tap.close()
            self.tap = None

    # -- runs --------------------------------------------------------------------------------

    def submit(self, run_config: Mapping[str, Any], name: str = "run") -> subprocess.Popen[bytes]:
        """Start ``flwr run <repo> e2e --stream`` (returns at once; see :meth:`finish`)."""
        cmd = [str(BIN / "flwr"), "run", str(REPO), "e2e", "--stream",
               "--run-config", run_config_arg(run_config)]  # fmt: skip
        return self._spawn(name, cmd).popen

    def finish(self, popen: subprocess.Popen[bytes], name: str = "run",
               timeout: float = 180) -> RunOutcome:  # fmt: skip
        """Wait for a submitted run; its status comes from ``flwr ls`` (the CLI exits 0 even
        when the ServerApp raised)."""
        started = time.monotonic()
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        log = (self.work / f"{name}.log").read_text(errors="replace")
        run_id = None
        for line in log.splitlines():
            if "Successfully started run" in line:
                run_id = line.rsplit(" ", 1)[-1].strip()
        status, details = self.run_status(run_id) if run_id else ("not-started", log[-2000:])
        return RunOutcome(run_id, status, details, log, time.monotonic() - started)

    def run(self, run_config: Mapping[str, Any], name: str = "run",
            timeout: float = 180) -> RunOutcome:  # fmt: skip
        """Submit a run and wait for it to end."""
        return self.finish(self.submit(run_config, name), name, timeout)

    def run_status(self, run_id: str) -> tuple[str, str]:
        """(status, details) of a run, as ``flwr ls --format json`` reports them."""
        out = subprocess.run(
            [str(BIN / "flwr"), "ls", "e2e", "--run-id", run_id, "--format", "json"],
            capture_output=True, text=True, env=self.env, timeout=60,
        )  # fmt: skip
        try:
            runs = json.loads(out.stdout)["runs"]
            return str(runs[0]["status"]), str(runs[0].get("status-details", ""))
        except (ValueError, KeyError, IndexError):
            return "unknown", out.stdout + out.stderr

    def logs(self) -> str:
        """Every log of this federation (for assertion messages)."""
        return "\n".join(
            f"===== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.work.glob("*.log"))
        )


def _wait_port(port: int, proc: _Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout:g} s")


@contextlib.contextmanager
def federation(work: Path, nodes: list[NodeSpec]) -> Iterator[Federation]:
    """A running SuperLink and one SuperNode per spec; everything stopped afterwards."""
    fed = Federation(work)
    try:
        fed.start_superlink()
        for spec in nodes:
            fed.start_node(spec)
        yield fed
    finally:
        fed.close()
