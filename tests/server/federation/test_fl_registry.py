"""The federation registry, the status view and the per-round plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from server.console import status_view
from server.federation import (
    LinkOptions,
    connection_toml,
    run_config_toml,
    superlink_command,
)
from server.federation.plots import plot_rounds
from server.federation.registry import DecisionRecord, Participant, Registry, RoundRecord
from server.federation.settings import FederationSettings


def _round(n: int, accepted: int) -> RoundRecord:
    return RoundRecord(
        n, "done", 0.0, 1.5, 3, 3, accepted, {"train-loss": 1.0 / n}, {"eval-accuracy": 0.5},
        {"accuracy": 60.0 + n, "referable_sensitivity": 80.0},
    )  # fmt: skip


def test_rounds_participants_rejections_and_decisions(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry.db")
    first = [
        Participant(1, "train", "accepted", "", {"num-examples": 40}),
        Participant(2, "train", "rejected", "non-finite", {}),
        Participant(3, "train", "timeout", "no reply"),
    ]
    reg.record_round(_round(1, 1), first)
    # the same round again (a restarted server re-ran it) replaces the first try
    reg.record_round(_round(1, 2), [*first[:2], Participant(3, "train", "accepted")])
    reg.record_round(_round(2, 3), [Participant(1, "evaluate", "declined", "4 cases < 16")])
    assert [r.accepted for r in reg.rounds()] == [2, 3]
    assert [(r, p.node_id) for r, p in reg.rejections()] == [(1, 2)]
    assert len(reg.participants(1)) == 3
    reg.record_decision(DecisionRecord(2, False, "worse", {"accuracy": 1.0}, {"accuracy": 2.0}))
    (d,) = Registry(tmp_path / "registry.db").decisions()
    assert not d.promoted and d.reason == "worse" and d.deployed == {"accuracy": 2.0}

    console = Console(record=True, width=200)
    console.print(status_view(reg, 3))
    text = console.export_text()
    assert "non-finite" in text and "declined" in text and "kept deployed" in text
    assert "(2/3 rounds)" in text

    png = plot_rounds(reg.rounds(), tmp_path / "rounds.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_superlink_and_connection_flags(tmp_path: Path) -> None:
    plain = LinkOptions()
    cmd = superlink_command(plain, tmp_path / "s.db", Path("/v/bin"))
    assert "--insecure" in cmd and "--disable-runtime-dependency-installation" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "insecure = true" in connection_toml(plain)
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("ca.crt", "server.pem", "server.key"):
        (tls / name).write_text("x")
    secure = LinkOptions(tls_dir=tls, supernode_auth=True)
    cmd = superlink_command(secure, tmp_path / "s.db", Path("/v/bin"))
    assert "--insecure" not in cmd and "--enable-supernode-auth" in cmd
    assert cmd[cmd.index("--ssl-ca-certfile") + 1] == str(tls / "ca.crt")
    assert "root-certificates" in connection_toml(secure)


def test_run_config_file_round_trips() -> None:
    import tomllib

    s = FederationSettings.from_run_config({"model": "/a b/m.json", "promote": False})
    assert FederationSettings.from_run_config(tomllib.loads(run_config_toml(s))) == s
