"""agent.yaml with flag overrides, refusals that name the field, and TLS when configured."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.service import AgentConfig, load_config
from tests.tls import self_signed


def test_file_then_flags(tmp_path: Path) -> None:
    assert load_config(tmp_path) == AgentConfig()
    (tmp_path / "agent.yaml").write_text(
        "port: 9000\nmax_batch: 4\ntls_cert: c.pem\ntls_key: k.pem\n"
    )
    config = load_config(tmp_path, port=9100, host=None)
    assert (config.port, config.max_batch) == (9100, 4)
    assert config.tls and config.tls_cert == tmp_path / "c.pem"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("port: 70000\n", "'port'"),
        ("max_batchh: 4\n", "'max_batchh'"),
        ("- 1\n", "mapping"),
        ("port: [\n", "not valid YAML"),
        ("tls_cert: c.pem\n", "together"),
        ("precision: fp8\n", "'precision'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, phrase: str) -> None:
    (tmp_path / "agent.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"agent\.yaml") as info:
        load_config(tmp_path)
    assert phrase in str(info.value)


def test_tls_when_configured(agent: Any, live: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with live(agent.app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(server.url + "/v1/status", headers=agent.headers(), verify=context)
        assert r.status_code == 200 and r.json()["model"]["version"] == 3
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https", "http") + "/v2/health/live", timeout=2)
