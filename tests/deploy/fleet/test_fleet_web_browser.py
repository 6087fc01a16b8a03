"""The fleet page served by `fovea fleet serve` (a real uvicorn) in headless Chromium, and TLS."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.fleet.test_fleet_web import DEVICE_TOKEN, SCRIPT_HOST, Fleet, build_fleet
from tests.tls import self_signed

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(fleet: Fleet, work: Path, *extra: str) -> Iterator[int]:
    """``fovea fleet serve`` on a free 127.0.0.1 port until the block ends; the port."""
    port = _free_port()
    cmd = [
        sys.executable, "-c", "from server.cli import main; main()", "fleet", "serve",
        "--db", str(fleet.config.inventory), "--accounts", str(fleet.config.accounts),
        "--federation", str(fleet.federation), "--port", str(port), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(work / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            log_text = (work / "serve.log").read_text(errors="replace")
            assert proc.poll() is None, f"fovea fleet serve exited:\n{log_text}"
            assert time.monotonic() < deadline, f"fovea fleet serve did not listen:\n{log_text}"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _note_dialog(dialog: Any, seen: list[str]) -> None:
    seen.append(dialog.message)
    dialog.dismiss()


_ROWS = """rows => rows.map(r => ({
    host: r.querySelector('td.host').innerText,
    version: r.querySelector('td.version').innerText,
    health: r.querySelector('td.health').innerText,
    alerts: r.querySelector('td.alerts').innerText,
    proposals: r.querySelector('td.proposals').innerText,
}))"""


def test_chromium_signs_in_and_finds_each_devices_version_alerts_and_proposals(
    browser: Any, tmp_path: Path
) -> None:
    fleet = build_fleet(tmp_path)
    with _serve(fleet, tmp_path) as port:
        url = f"http://127.0.0.1:{port}/"
        dialogs: list[str] = []
        refused = browser.new_context()
        page = refused.new_page()
        page.on("dialog", lambda d: _note_dialog(d, dialogs))
        assert page.goto(url).status == 401  # no token: refused, with the sign-in form
        assert page.is_visible("#token") and "jetson-a" not in page.content()
        page.fill("#token", DEVICE_TOKEN)  # a device's token is not a page account
        page.click("#sign-in")
        page.wait_for_selector("#login-error")
        assert "jetson-a" not in page.content()
        refused.close()

        context = browser.new_context()
        page = context.new_page()
        page.on("dialog", lambda d: _note_dialog(d, dialogs))
        page.goto(url)
        page.fill("#token", fleet.token)
        page.click("#sign-in")
        page.wait_for_selector("table.devices tr.device")
        rows = {r["host"]: r for r in page.eval_on_selector_all("tr.device", _ROWS)}
        html = page.content()
        body = page.inner_text("body")
        cookies = {c["name"]: c for c in context.cookies()}
        page.click("#sign-out")
        page.wait_for_selector("#token")
        context.close()

    assert set(rows) == {"jetson-a", "jetson-b", SCRIPT_HOST}  # the <script> name, as text
    assert "dr-student v7" in rows["jetson-a"]["version"]
    assert "dr-student v6" in rows["jetson-b"]["version"]
    assert "dr-student v5" in rows[SCRIPT_HOST]["version"]
    assert "metric: brightness; statistic: 9.25" in rows["jetson-a"]["alerts"]
    assert "threshold: 0.31" in rows["jetson-a"]["proposals"]
    assert "<img src=x onerror=alert(1)>" in rows[SCRIPT_HOST]["alerts"]
    assert rows["jetson-b"]["alerts"].startswith("none")
    assert rows["jetson-b"]["proposals"] == "none" == rows[SCRIPT_HOST]["proposals"]
    assert "unreachable" in rows["jetson-b"]["health"]
    assert "promoted (bundle v8)" in body and "dr-student-v7.tar" in body
    assert dialogs == []  # nothing a device sent ran as script
    assert DEVICE_TOKEN not in html and "case-7f3a9c" not in html
    session = cookies["fovea_fleet_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"


def test_tls_serves_https_with_a_secure_cookie(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path)
    cert, key = self_signed(tmp_path)
    with _serve(fleet, tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as port:
        url = f"https://127.0.0.1:{port}/"
        verify = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(url, verify=verify).status_code == 401
        page = httpx.get(url, headers={"Authorization": f"Bearer {fleet.token}"}, verify=verify)
        assert page.status_code == 200 and "dr-student v7" in page.text
        assert page.headers["strict-transport-security"].startswith("max-age=")
        login = httpx.post(url + "login", data={"token": fleet.token}, verify=verify)
        assert login.status_code == 303
        assert "secure" in login.headers["set-cookie"].lower()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=3)
