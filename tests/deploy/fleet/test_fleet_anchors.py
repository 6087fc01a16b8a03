"""The fleet keeps each device's audit chain head (its anchor) from the poll, refuses a head
that went backwards, and exports it for ``fovea-agent audit verify --anchor``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.fleet import Device, Inventory, TransportSpec, poll
from edge_agent.store import Anchor, Store
from server.cli import app


class _Agent:
    """A stand-in agent on 127.0.0.1: ``/v1/status`` answers ``body`` to the fleet token."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path == "/v1/status" and self.headers["Authorization"] == "Bearer t"
                data = json.dumps(agent.body).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def agent() -> Iterator[_Agent]:
    a = _Agent()
    yield a
    a.server.shutdown()
    a.server.server_close()


def _status(store: Store) -> dict[str, Any]:
    model = {"name": "m", "version": 1, "ready": True, "backend": "ort", "precision": "fp32"}
    return {"model": model, "audit_head": store.signed_head()}


def test_poll_keeps_the_head_and_refuses_one_that_went_back(tmp_path: Path, agent: _Agent) -> None:
    inv = Inventory(tmp_path / "fleet.db")
    spec = TransportSpec(kind="local", root=str(tmp_path), restart=("true",))
    inv.add(Device(host="j1", url=agent.url, token="t", transport=spec))
    store_path = tmp_path / "device" / "state.db"
    store_path.parent.mkdir()
    with Store(store_path) as store:
        for i in range(3):
            store.record_screening(user="tech", model_version=1, request={}, result={"i": i})
        early = _status(store)
        store.record_screening(user="tech", model_version=1, request={}, result={})
        agent.body = _status(store)
    [device] = asyncio.run(poll(inv, conn=None))
    assert device.status == "ready" and device.error is None
    kept = inv.audit_head("j1")
    assert kept is not None and kept.model_dump() == agent.body["audit_head"]
    assert kept.seq == 5
    # the device now claims an earlier head (its chain was cut back): the anchor stays
    agent.body = early
    [device] = asyncio.run(poll(inv, conn=None))
    assert device.error is not None and "went back from entry 5 to 4" in device.error
    assert inv.get("j1").error == device.error
    assert inv.audit_head("j1") == kept
    # the exported anchor is what the device checks its chain against
    out = tmp_path / "anchor.json"
    done = CliRunner().invoke(
        app, ["fleet", "anchor", "j1", "--db", str(tmp_path / "fleet.db"), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    with Store(store_path) as store:
        assert store.verify_audit(Anchor.parse(out.read_text())).ok
    raw = sqlite3.connect(store_path)
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE seq = 5")
    raw.execute("DELETE FROM screenings WHERE rowid = (SELECT MAX(rowid) FROM screenings)")
    raw.commit()
    raw.close()
    with Store(store_path) as store:
        check = store.verify_audit(Anchor.parse(out.read_text()))
    assert not check.ok and "truncated" in check.reason


def test_inventory_migrates_and_anchor_export_needs_a_poll(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    raw = sqlite3.connect(db)  # an inventory made before anchors existed (schema 1)
    from deploy.fleet.inventory import MIGRATIONS
    from edge_agent.store.sqlite import statements

    for statement in statements(str(MIGRATIONS[0])):
        raw.execute(statement)
    raw.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    raw.commit()
    raw.close()
    inv = Inventory(db)
    spec = TransportSpec(kind="local", root=str(tmp_path), restart=("true",))
    inv.add(Device(host="j1", url="http://127.0.0.1:9", token="t", transport=spec))
    assert inv.audit_head("j1") is None
    runner = CliRunner()
    done = runner.invoke(app, ["fleet", "anchor", "j1", "--db", str(db)])
    assert done.exit_code == 2 and "fovea fleet poll" in done.output
    done = runner.invoke(app, ["fleet", "anchor", "nope", "--db", str(db)])
    assert done.exit_code == 2 and "nope is not in" in done.output


def test_a_rekey_on_purpose_is_accepted_and_the_old_anchor_kept(
    tmp_path: Path, agent: _Agent
) -> None:
    db = tmp_path / "fleet.db"
    inv = Inventory(db)
    spec = TransportSpec(kind="local", root=str(tmp_path), restart=("true",))
    inv.add(Device(host="j1", url=agent.url, token="t", transport=spec))
    store_path = tmp_path / "device" / "state.db"
    store_path.parent.mkdir()
    with Store(store_path) as store:
        store.record_screening(user="tech", model_version=1, request={}, result={})
        agent.body = _status(store)
    asyncio.run(poll(inv, conn=None))
    old = inv.audit_head("j1")
    (tmp_path / "device" / "keys" / "audit.key").unlink()  # lost; re-keyed on the device
    with Store(store_path, rekey=True) as store:
        agent.body = _status(store)
    [device] = asyncio.run(poll(inv, conn=None))
    assert device.error is not None and "--accept-rekey" in device.error
    assert inv.audit_head("j1") == old  # a poll never takes a new key by itself
    runner = CliRunner()
    done = runner.invoke(app, ["fleet", "anchor", "j1", "--db", str(db), "--accept-rekey"])
    assert done.exit_code == 0, done.output
    new = inv.audit_head("j1")
    assert new is not None and old is not None and new.key_id != old.key_id
    assert inv.retired_heads("j1") == [old]
    again = runner.invoke(app, ["fleet", "anchor", "j1", "--db", str(db), "--accept-rekey"])
    assert again.exit_code == 2 and "nothing to accept" in again.output
    [device] = asyncio.run(poll(inv, conn=None))
    assert device.error is None
