"""The fleet page through its ASGI app: accounts, sign-in, what it shows and what it never shows."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deploy.fleet import Device, HostOutcome, Inventory, TransportSpec
from deploy.fleet.accounts import AccountError, PageAccounts
from deploy.fleet.snapshots import record_status
from deploy.fleet.web import COOKIE, PageConfig, fleet_page
from server.cli.fleet import fleet_app as fleet_cli
from server.cli.fleet_federation import federation_runs
from server.federation.registry import DecisionRecord, Registry, RoundRecord

DEVICE_TOKEN = "fleet-device-token-Zq8x1LmN0pQrStUvWxYz0123456789abcdEFG"
SCRIPT_HOST = "<script>alert('x')</script>"
PATIENT_CASE = "case-7f3a9c-patient-ID-0042"


@dataclass(frozen=True)
class Fleet:
    """An inventory with three devices, one rollout and a federation run; a page account."""

    config: PageConfig
    federation: Path
    token: str


def _status(alerts: list[object], proposals: object) -> dict[str, object]:
    return {
        "model": {"name": "dr-student", "version": 7, "ready": True, "precision": "fp16"},
        "user": {"name": "fleet", "role": "admin"},
        "drift": {"alerts": alerts, "window": 300},
        "threshold_proposals": proposals,
    }


def _devices(inventory: Inventory) -> None:
    spec = TransportSpec(kind="local", root="/srv/devices/x")
    now = time.time()
    for host, site, version, precision in [
        ("jetson-a", "clinic-north", 7, "fp16"),
        ("jetson-b", "clinic-south", 6, "int8"),
        (SCRIPT_HOST, "<b>site</b>", 5, "fp32"),
    ]:
        inventory.add(
            Device(
                host=host, url="http://127.0.0.1:9", token=DEVICE_TOKEN, site=site,
                hardware="Jetson AGX Xavier", transport=spec, agent_version="0.9.1",
                model_name="dr-student", model_version=version, backend="onnxruntime",
                precision=precision, last_seen=now, status="ready",
            )
        )  # fmt: skip
    broken = inventory.get("jetson-b").model_copy(
        update={"status": "unreachable", "error": f"poll failed with token {DEVICE_TOKEN}"}
    )
    inventory.save(broken)
    alert = {"metric": "brightness", "statistic": 9.25, "case_id": PATIENT_CASE,
             "image": "/srv/cases/x.png", "cases": [PATIENT_CASE]}  # fmt: skip
    proposal = {"site": "clinic-north", "threshold": 0.31, "sensitivity_ci": [0.91, 0.99],
                "status": "pending", "referable_cases": 118}  # fmt: skip
    applied = {"threshold": 0.5, "status": "applied"}
    record_status(inventory.path, "jetson-a", _status([alert], [proposal, applied]))
    record_status(inventory.path, SCRIPT_HOST, _status(["<img src=x onerror=alert(1)>"], None))


def _federation(folder: Path) -> None:
    registry = Registry(folder / "run-1" / "registry.db")
    registry.record_round(RoundRecord(1, "done", 0.0, 1.0, 3, 3, 2, {}, {}, {"accuracy": 81.5}), [])
    registry.record_decision(
        DecisionRecord(
            1, True, "non-inferior to the deployed model", {"accuracy": 81.5},
            {"accuracy": 81.0}, {"clinic-north": {"accuracy": 0.84, "n": 120}}, "b.tar", 8,
        )
    )  # fmt: skip


def build_fleet(tmp_path: Path) -> Fleet:
    """The fleet the page tests read, under ``tmp_path``."""
    inventory = Inventory(tmp_path / "fleet.db")
    _devices(inventory)
    rid = inventory.start_rollout("bundle", "/bundles/dr-student-v7.tar", "7", {"canary": 1})
    outcome = HostOutcome(
        host="jetson-a", stage="canary", result="updated", from_version="6", to_version="7",
        seconds=12.0,
    )  # fmt: skip
    inventory.record_host(rid, outcome)
    inventory.finish_rollout(rid, "succeeded", "1 updated")
    _federation(tmp_path / "federation")
    accounts = tmp_path / "page.db"
    token = PageAccounts(accounts).add("admin-1")
    federation = tmp_path / "federation"
    config = PageConfig(inventory=inventory.path, accounts=accounts, federation_dir=federation)
    return Fleet(config, federation, token)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    """The fleet the page tests read."""
    return build_fleet(tmp_path)


def _client(fleet: Fleet) -> TestClient:
    return TestClient(fleet_page(fleet.config, lambda: federation_runs(fleet.federation)))


def _headers_are_strict(headers: object) -> None:
    csp = headers["content-security-policy"]  # type: ignore[index]
    assert "default-src 'self'" in csp and "script-src 'none'" in csp
    assert headers["x-frame-options"] == "DENY"  # type: ignore[index]
    assert headers["cache-control"] == "no-store"  # type: ignore[index]


def test_without_a_page_token_the_answer_is_401_and_the_sign_in_form(fleet: Fleet) -> None:
    client = _client(fleet)
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": fleet.token},
                    {"Authorization": f"Bearer {DEVICE_TOKEN}"}]:  # fmt: skip
        r = client.get("/", headers=headers)
        assert r.status_code == 401, headers
        assert 'action="/login"' in r.text and "jetson-a" not in r.text
        _headers_are_strict(r.headers)
    client.cookies.set(COOKIE, "made-up-session")
    assert client.get("/").status_code == 401
    assert client.get("/fleet.css").status_code == 200
    assert client.get("/docs").status_code == 404


def test_page_shows_versions_health_alerts_proposals_rounds_and_rollouts(fleet: Fleet) -> None:
    r = _client(fleet).get("/", headers={"Authorization": f"Bearer {fleet.token}"})
    assert r.status_code == 200
    _headers_are_strict(r.headers)
    page = r.text
    for text in ["signed in as admin-1", "clinic-north", "dr-student v7", "dr-student v6",
                 "fp16", "int8", "unreachable", "metric: brightness; statistic: 9.25",
                 "threshold: 0.31", "referable_cases: 118", "non-inferior to the deployed model",
                 "bundle v8", "clinic-north: accuracy: 0.84; n: 120", "81.5",
                 "dr-student-v7.tar", "jetson-a (canary): updated 6 → 7"]:  # fmt: skip
        assert text in page, text
    assert "threshold: 0.5" not in page  # an applied proposal is no longer pending
    assert page.count('<li class="alert">') == 2  # jetson-b has no status answer: none


def test_page_never_shows_device_tokens_or_patient_data(fleet: Fleet) -> None:
    page = _client(fleet).get("/", headers={"Authorization": f"Bearer {fleet.token}"}).text
    assert DEVICE_TOKEN not in page and DEVICE_TOKEN[:20] not in page
    assert "poll failed with token [hidden]" in page
    assert PATIENT_CASE not in page and "/srv/cases" not in page
    assert "cases: 1 item(s)" in page  # a list of cases only as its count
    assert "case_id" not in page and "image" not in page


def test_every_value_is_escaped(fleet: Fleet) -> None:
    page = _client(fleet).get("/", headers={"Authorization": f"Bearer {fleet.token}"}).text
    assert "<script" not in page and "<img" not in page and "<b>site" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_sign_in_form_sets_a_strict_http_only_session_cookie(fleet: Fleet) -> None:
    client = _client(fleet)
    wrong = client.post("/login", data={"token": DEVICE_TOKEN}, follow_redirects=False)
    assert wrong.status_code == 401 and "not a fleet page account" in wrong.text
    assert "set-cookie" not in wrong.headers
    r = client.post("/login", data={"token": fleet.token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    assert fleet.token not in r.headers["set-cookie"]
    assert client.get("/").status_code == 200  # the client keeps the cookie
    PageAccounts(fleet.config.accounts).remove("admin-1")
    assert client.get("/").status_code == 401  # a removed account's sessions end


def test_sign_out_ends_the_session(fleet: Fleet) -> None:
    client = _client(fleet)
    client.post("/login", data={"token": fleet.token})
    sid = client.cookies[COOKIE]
    client.post("/logout")
    client.cookies.set(COOKIE, sid)
    assert client.get("/").status_code == 401


def test_accounts_keep_only_a_hash_of_each_token(tmp_path: Path) -> None:
    accounts = PageAccounts(tmp_path / "page.db")
    token = accounts.add("ops.anna")
    raw = (tmp_path / "page.db").read_bytes()
    assert token.encode() not in raw
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw
    assert (tmp_path / "page.db").stat().st_mode & 0o777 == 0o600
    assert accounts.authenticate(token) == "ops.anna" and accounts.authenticate("x") is None
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("ops.anna")
    with pytest.raises(AccountError, match="letters"):
        accounts.add("<anna>")
    accounts.remove("ops.anna")
    assert accounts.authenticate(token) is None


def test_users_commands_print_the_token_once(tmp_path: Path) -> None:
    runner, db = CliRunner(), str(tmp_path / "page.db")
    added = runner.invoke(fleet_cli, ["users", "add", "anna", "--accounts", db])
    assert added.exit_code == 0, added.output
    token = added.output.split()[-1]
    assert PageAccounts(Path(db)).authenticate(token) == "anna"
    listed = runner.invoke(fleet_cli, ["users", "list", "--accounts", db])
    assert "anna" in listed.output and token not in listed.output
    assert runner.invoke(fleet_cli, ["users", "remove", "anna", "--accounts", db]).exit_code == 0
    gone = runner.invoke(fleet_cli, ["users", "remove", "anna", "--accounts", db])
    assert gone.exit_code == 2 and "no account 'anna'" in gone.output


def test_without_federation_records_the_page_says_none_recorded(fleet: Fleet) -> None:
    empty = fleet.federation.parent / "no-runs"
    client = TestClient(fleet_page(fleet.config, lambda: federation_runs(empty)))
    page = client.get("/", headers={"Authorization": f"Bearer {fleet.token}"}).text
    assert "none recorded in" in page
    bare = TestClient(fleet_page(fleet.config))
    page = bare.get("/", headers={"Authorization": f"Bearer {fleet.token}"}).text
    assert "none recorded (start the page with --federation DIR)" in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_cert": "cert.pem"}, "both --tls-cert and --tls-key"),
        ({"tls_cert": "cert.pem", "tls_key": "key.pem"}, "does not exist"),
        ({"inventory": "missing.db"}, "no fleet inventory"),
        ({"port": 0}, "port 0"),
    ],
)
def test_config_refuses_half_tls_and_missing_files(
    fleet: Fleet, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "inventory": fleet.config.inventory,
        "accounts": fleet.config.accounts,
    }
    fields.update({k: tmp_path / v if isinstance(v, str) else v for k, v in change.items()})
    with pytest.raises(ValueError, match=message):
        PageConfig(**fields)  # type: ignore[arg-type]


def test_serve_refuses_a_missing_inventory_and_half_tls(fleet: Fleet, tmp_path: Path) -> None:
    runner, accounts = CliRunner(), str(fleet.config.accounts)
    missing = runner.invoke(
        fleet_cli, ["serve", "--db", str(tmp_path / "none.db"), "--accounts", accounts]
    )
    assert missing.exit_code == 2 and "no fleet inventory" in missing.output
    half = runner.invoke(
        fleet_cli,
        ["serve", "--db", str(fleet.config.inventory), "--accounts", accounts,
         "--tls-cert", str(fleet.config.inventory)],
    )  # fmt: skip
    assert half.exit_code == 2 and "both --tls-cert and --tls-key" in half.output
