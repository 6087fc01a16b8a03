"""``fovea-agent audit verify``: exit 0 when intact, exit 1 listing every problem by name and id,
and ``--anchor`` as SEQ:HASH, a signed head's JSON or a file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.install import DeviceRoot
from edge_agent.store import Store


def _root(tmp_path: Path) -> tuple[Path, list[str], dict[str, object]]:
    root = DeviceRoot(tmp_path / "device").ensure()
    with Store(root.state_db, audit_key=root.audit_key) as s:
        cases = [
            s.record_screening(user="tech", model_version=1, request={}, result={"i": i})
            for i in range(3)
        ]
        for case in cases:
            s.record_review(case, user="doc", grade=2)
        head = s.signed_head()
    return root.path, cases, head


def test_verify_exits_0_when_intact_and_checks_an_anchor(tmp_path: Path) -> None:
    root, _, head = _root(tmp_path)
    runner = CliRunner()
    done = runner.invoke(app, ["audit", "verify", "--root", str(root)])
    assert done.exit_code == 0 and "intact" in done.output, done.output
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(json.dumps(head))
    for anchor in (f"{head['seq']}:{head['hash']}", json.dumps(head), str(anchor_file)):
        done = runner.invoke(app, ["audit", "verify", "--root", str(root), "--anchor", anchor])
        assert done.exit_code == 0 and f"anchor entry {head['seq']} present" in done.output


def test_verify_exits_1_and_lists_every_problem(tmp_path: Path) -> None:
    root, cases, head = _root(tmp_path)
    raw = sqlite3.connect(root / "state.db")
    raw.execute("UPDATE reviews SET grade = 4 WHERE id = 1")
    raw.execute("DELETE FROM screenings WHERE case_id = ?", (cases[2],))
    raw.execute("INSERT INTO screenings VALUES ('forged', 't', 'x', 1, '{}', '{}')")
    raw.commit()
    raw.close()
    runner = CliRunner()
    done = runner.invoke(app, ["audit", "verify", "--root", str(root)])
    assert done.exit_code == 1
    assert "3 problem(s)" in done.output
    assert "edited: review 1: differs from its audit entry" in done.output
    assert f"deleted: case {cases[2]}" in done.output
    assert "not entered: case forged" in done.output
    future = f"{head['seq'] + 5}:{head['hash']}"
    done = runner.invoke(app, ["audit", "verify", "--root", str(root), "--anchor", future])
    assert done.exit_code == 1 and "truncated: anchor" in done.output
    done = runner.invoke(app, ["audit", "verify", "--root", str(root), "--anchor", "nonsense"])
    assert done.exit_code == 1 and "SEQ:HASH" in done.output
