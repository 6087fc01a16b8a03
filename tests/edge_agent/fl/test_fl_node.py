"""``fovea-agent node``: the SuperNode command line, its node config, its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.fl.node import NodeSettings, node_config_arg, supernode_command


def test_command_for_a_tls_node_with_authentication(tmp_path: Path) -> None:
    ca, key = tmp_path / "ca.pem", tmp_path / "node.key"
    ca.write_text("x")
    key.write_text("x")
    root = tmp_path / "device root"
    settings = NodeSettings(
        root=root, superlink="fl.example:9092", root_certificates=ca, auth_key=key, site="b"
    )
    cmd = supernode_command(settings, Path("/venv/bin/flower-supernode"))
    assert cmd[:3] == ["/venv/bin/flower-supernode", "--superlink", "fl.example:9092"]
    assert "--insecure" not in cmd
    assert cmd[cmd.index("--root-certificates") + 1] == str(ca)
    assert cmd[cmd.index("--auth-supernode-private-key") + 1] == str(key)
    config = parse_config_args([cmd[cmd.index("--node-config") + 1]])
    assert config == {"root": str(root.resolve()), "site": "b", "threads": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"superlink": "nohost"}, "HOST:PORT"),
        ({}, "--root-certificates"),
        ({"insecure": True, "auth_key": Path("k")}, "requires TLS"),
        ({"insecure": True, "threads": 0}, "threads"),
        ({"root_certificates": Path("/missing.pem")}, "no file"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"root": Path("r"), "superlink": "127.0.0.1:9092", **kwargs}
    with pytest.raises(ValueError, match=message):
        NodeSettings(**args)  # type: ignore[arg-type]


def test_node_config_refuses_quotes() -> None:
    assert parse_config_args([node_config_arg({"a": "x y", "n": 3})]) == {"a": "x y", "n": 3}
    with pytest.raises(ValueError, match="quotes"):
        node_config_arg({"root": 'a"b'})


def test_cli_reports_bad_settings_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["node", "--root", str(tmp_path), "--superlink", "127.0.0.1:9092"]
    )
    assert result.exit_code == 1
    assert "--root-certificates" in result.output and "Traceback" not in result.output


def test_stopping_the_node_stops_its_supernode(tmp_path: Path) -> None:
    """SIGTERM to ``fovea-agent node`` must not leave an orphaned SuperNode holding its port."""
    import os
    import signal
    import subprocess
    import sys
    import time

    fake = tmp_path / "bin" / "flower-supernode"
    fake.parent.mkdir()
    pidfile = tmp_path / "child.pid"
    fake.write_text(
        f"#!{sys.executable}\nimport os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))"
        "\ntime.sleep(60)\n"
    )
    fake.chmod(0o755)
    code = (
        "import sys; from pathlib import Path; import edge_agent.fl.node as n; "
        f"n.find_supernode = lambda: Path({str(fake)!r}); "
        f"sys.exit(n.run_node(n.NodeSettings(root=Path({str(tmp_path)!r}), "
        "superlink='127.0.0.1:9092', insecure=True)))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[3])
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the fake SuperNode never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    time.sleep(0.2)
    status = Path(f"/proc/{child}/status")
    alive = status.exists() and "\tZ" not in status.read_text().split("State:")[1][:4]
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive


def test_the_node_takes_its_site_name_from_the_agents_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One name for the agent and its node: a bundle's per-site thresholds are keyed by it."""
    import edge_agent.fl

    seen = []
    monkeypatch.setattr(edge_agent.fl, "run_node", lambda s: seen.append(s.site) or 0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "agent.yaml").write_text("site: clinic-7\n")
    args = ["node", "--root", str(root), "--superlink", "127.0.0.1:9092", "--insecure"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--site", "other"]).exit_code == 0
    assert seen == ["clinic-7", "other"]
