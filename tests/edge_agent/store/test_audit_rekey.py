"""A lost audit key: the store refuses to open (no new key made silently), `fovea-agent audit
rekey` starts a new one on purpose, and verification then names what it can no longer check
while still catching every later edit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app as cli
from edge_agent.install import DeviceRoot
from edge_agent.store import Store, StoreError


def _store_with_rows(path: Path) -> list[str]:
    with Store(path) as s:
        s.add_user("doc", "clinician")
        cases = [
            s.record_screening(user="tech", model_version=1, request={}, result={"i": i})
            for i in range(3)
        ]
        s.record_review(cases[0], user="doc", grade=2)
    return cases


def test_a_missing_key_is_refused_not_replaced(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _store_with_rows(db)
    key = tmp_path / "keys" / "audit.key"
    key.unlink()
    with pytest.raises(StoreError, match=r"audit key .* is missing.*audit rekey"):
        Store(db)
    assert not key.exists()  # nothing made behind the admin's back
    with pytest.raises(StoreError, match="nothing to rekey"):
        Store(tmp_path / "fresh.db", audit_key=tmp_path / "other.key", rekey=True)


def test_after_a_rekey_old_entries_are_named_and_new_edits_caught(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    cases = _store_with_rows(db)
    (tmp_path / "keys" / "audit.key").unlink()
    with Store(db, rekey=True) as s:
        check = s.verify_audit()
        kinds = [p.kind for p in check.problems]
        assert kinds == ["unverifiable"], check.problems  # no flood of altered or unentered rows
        assert "entries 1-" in check.problems[0].subject
        s.record_screening(user="tech", model_version=1, request={}, result={"i": 9})
    with sqlite3.connect(db) as raw:  # an edit behind the agent's back, after the rekey
        raw.execute("UPDATE screenings SET result = '{\"i\": 7}' WHERE case_id = ?", (cases[1],))
    with Store(db) as s:  # the new key opens it from now on
        problems = {(p.kind, p.subject) for p in s.verify_audit().problems}
    assert ("edited", f"case {cases[1]}") in problems, problems


def test_the_rekey_command(tmp_path: Path) -> None:
    device = DeviceRoot(tmp_path / "root").ensure()
    _store_with_rows(device.state_db)
    device.audit_key.unlink()
    runner = CliRunner()
    refused = runner.invoke(cli, ["audit", "verify", "--root", str(device.path)])
    assert refused.exit_code == 1 and "audit rekey" in refused.output
    done = runner.invoke(cli, ["audit", "rekey", "--root", str(device.path), "--yes"])
    assert done.exit_code == 0, done.output
    assert "new audit key" in done.output and device.audit_key.stat().st_mode & 0o077 == 0
    again = runner.invoke(cli, ["audit", "rekey", "--root", str(device.path), "--yes"])
    assert again.exit_code == 1 and "nothing to rekey" in again.output
    verify = runner.invoke(cli, ["audit", "verify", "--root", str(device.path)])
    assert verify.exit_code == 1 and "unverifiable" in verify.output
