"""``fovea federation start`` over real processes, with TLS and SuperNode authentication.

The admin's command starts the SuperLink (TLS from a CA made here for 127.0.0.1, SuperNode
authentication on), registers two devices' EC public keys, and runs one round; the two devices
join through ``fovea-agent node --root-certificates ca.crt --auth-key KEY``. A third device
whose key was never registered is refused. ``fovea federation status`` then shows the round.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from flower_harness import BIN, free_port

pytestmark = pytest.mark.slow


def _make_tls(out: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1: ``ca.crt``, ``server.pem``, ``server.key``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fovea test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (out / "ca.crt").write_bytes(ca.public_bytes(pem))
    (out / "server.pem").write_bytes(cert.public_bytes(pem))
    (out / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out


def _node_key(out: Path, name: str) -> tuple[Path, Path]:
    """An EC (P-384) SuperNode key pair in OpenSSH format: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / f"{name}.key", out / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    private.chmod(0o600)
    return private, public


class _Procs:
    """Processes started by this test, each in its own session, stopped by process group."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (self.work / f"{name}.log").open("ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
                start_new_session=True,
            )  # fmt: skip
        self.procs[name] = popen
        return popen

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.work.rglob("*.log"))
        )

    def close(self) -> None:
        for popen in reversed(list(self.procs.values())):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=15)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[_Procs]:
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    p = _Procs(tmp_path, env)
    try:
        yield p
    finally:
        p.close()


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s\n{logs()}")
        time.sleep(0.2)


def test_start_with_tls_and_supernode_auth(
    fl_world: dict[str, Path],
    fl_config: Callable[..., dict[str, object]],
    procs: _Procs,
    tmp_path: Path,
) -> None:
    tls = _make_tls(tmp_path / "tls")
    keys = tmp_path / "keys"
    keys.mkdir()
    key_a, pub_a = _node_key(keys, "a")
    key_b, pub_b = _node_key(keys, "b")
    key_x, _ = _node_key(keys, "stranger")  # never registered
    run_dir = tmp_path / "run"
    config = fl_config(run_dir, **{"min-available-nodes": 2, "num-rounds": 1})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    start = procs.spawn("start", [
        str(BIN / "fovea"), "federation", "start", "--config", str(tmp_path / "run.yaml"),
        "--port", str(port), "--tls-dir", str(tls), "--supernode-auth",
        "--register", str(pub_a), "--register", str(pub_b),
        "--state", str(tmp_path / "superlink"),
    ])  # fmt: skip
    # the devices join once their keys are registered (start prints the address after that)
    _wait(lambda: "SuperLink on" in procs.log("start") or start.poll() is not None, 90,
          "fovea federation start did not register the keys", procs.logs)  # fmt: skip
    assert start.poll() is None, procs.logs()

    def node(name: str, site: str, key: Path) -> subprocess.Popen[bytes]:
        return procs.spawn(f"node-{name}", [
            str(BIN / "fovea-agent"), "node", "--root", str(fl_world[site]),
            "--superlink", f"127.0.0.1:{port}", "--root-certificates", str(tls / "ca.crt"),
            "--auth-key", str(key), "--site", site, "--threads", "1",
            "--port", str(free_port()),
        ])  # fmt: skip

    node("a", "site-a", key_a)
    node("b", "site-b", key_b)
    stranger = node("stranger", "site-d", key_x)

    try:
        start.wait(timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fovea federation start did not finish\n{procs.logs()}")
    assert start.returncode == 0, procs.logs()

    # the unregistered device was refused: the SuperLink would not activate it, and it exited
    try:
        code = stranger.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the unregistered SuperNode is still running\n{procs.logs()}")
    stranger_log = procs.log("node-stranger")
    assert code != 0 and "Failed to activate SuperNode" in stranger_log, stranger_log
    assert "Received" not in stranger_log, stranger_log
    link_log = (tmp_path / "superlink" / "superlink.log").read_text(errors="replace")
    assert "No SuperNode found with the given public key" in link_log, link_log[-3000:]
    assert procs.log("start").count("registered SuperNode key") == 2, procs.log("start")

    status = subprocess.run(
        [str(BIN / "fovea"), "federation", "status", "--run-dir", str(run_dir)],
        capture_output=True, text=True, env=procs.env, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line for line in status.stdout.splitlines() if line.strip().startswith("│")]
    assert any(line.split("│")[1].strip() == "1" for line in rows), status.stdout
    assert "status: " in status.stdout, status.stdout
    print(status.stdout, file=sys.stderr)
