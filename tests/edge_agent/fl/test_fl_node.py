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
