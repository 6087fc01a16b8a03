"""`fovea keys`, `fovea bundle` and `fovea-agent trust`: outputs, and clear errors on bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from edge_agent.cli import app as agent_app
from server.cli import app

runner = CliRunner()
AGENT = Path(sys.executable).parent / "fovea-agent"


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _refused(result: Result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text


def test_keys_and_bundles_end_to_end_with_the_agent(export_dir: Path, tmp_path: Path) -> None:
    keys, device = tmp_path / "keys", tmp_path / "device"
    out = _ok(["keys", "generate", "publisher", "--dir", str(keys)])
    assert "mode 0600" in out and str(keys / "publisher.key") in out
    (device / "keys" / "trusted").mkdir(parents=True)
    (device / "keys" / "trusted" / "publisher.pub").write_bytes(
        (keys / "publisher.pub").read_bytes()
    )

    out = _ok(["keys", "rotate", "--dir", str(keys), "--name", "publisher-2026"])
    update = keys / "updates" / "trust-0001.json"
    assert str(update) in " ".join(out.split()) and "fovea-agent trust apply" in out
    applied = subprocess.run(
        [str(AGENT), "trust", "apply", str(update), "--root", str(device)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert "applied trust update 1" in applied.stdout
    replay = subprocess.run(
        [str(AGENT), "trust", "apply", str(update), "--root", str(device)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode != 0 and "not newer" in replay.stderr
    assert "Traceback" not in replay.stderr

    bundle = tmp_path / "b.tar"
    out = _ok(
        [
            "bundle",
            "build",
            str(export_dir),
            "--version",
            "4",
            "--key",
            str(keys / "publisher-2026.key"),
            "--out",
            str(bundle),
        ]
    )
    assert f"wrote {bundle}" in " ".join(out.split())
    out = _ok(["bundle", "verify", str(bundle), "--trusted", str(device / "keys")])
    assert "ok" in out and "tiny-student v4" in out

    out = " ".join(_ok(["bundle", "inspect", str(bundle)]).split())
    for needle in (
        "tiny-student (resnet), version 4",
        "referral 0.4321",
        "fp32",
        "int8",
        "81.50 %",
        "model.fp32.onnx",
        "golden.npz",
        "export.json",
        "not checked",
        "fp16 0.5 / int8 1.0",
    ):
        assert needle in out, needle
    summary = json.loads(_ok(["bundle", "inspect", str(bundle), "--json", "--trusted", str(keys)]))
    signer = json.loads((keys / "ledger.json").read_text())["current"]
    assert summary["signer"] == summary["verified_by"] == signer
    assert summary["precisions"]["int8"]["size_bytes"] == 1600
    assert summary["files"]["model.fp32.onnx"] == 6000

    out = _ok(["keys", "revoke", "publisher", "--dir", str(keys)])
    assert "revoked key" in out
    show = subprocess.run(
        [
            str(AGENT),
            "trust",
            "apply",
            str(keys / "updates" / "trust-0002.json"),
            "--root",
            str(device),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0, show.stderr
    state = runner.invoke(agent_app, ["trust", "show", "--root", str(device)])
    assert json.loads(state.output) == {
        "sequence": 2,
        "trusted": [signer],
        "revoked": [_revoked_kid(keys)],
    }
    assert "publisher " in _ok(["keys", "list", "--dir", str(keys)])


def _revoked_kid(keys: Path) -> str:
    ledger = json.loads((keys / "ledger.json").read_text())
    return next(k for k, v in ledger["keys"].items() if v["status"] == "revoked")


@pytest.fixture
def signed(export_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(key directory, a bundle signed by its key)."""
    keys = tmp_path / "k"
    _ok(["keys", "generate", "pub", "--dir", str(keys)])
    bundle = tmp_path / "s.tar"
    _ok(
        [
            "bundle",
            "build",
            str(export_dir),
            "--version",
            "1",
            "--key",
            str(keys / "pub.key"),
            "--out",
            str(bundle),
        ]
    )
    return keys, bundle


def test_bad_inputs_give_clear_errors(
    signed: tuple[Path, Path], export_dir: Path, tmp_path: Path
) -> None:
    keys, bundle = signed
    inv = runner.invoke
    _refused(inv(app, ["keys", "generate", "bad/name", "--dir", str(tmp_path / "x")]), "key name")
    _refused(inv(app, ["keys", "generate", "pub2", "--dir", str(keys)]), "already has signing key")
    _refused(inv(app, ["keys", "rotate", "--dir", str(tmp_path / "none")]), "fovea keys generate")
    _refused(inv(app, ["keys", "revoke", "nobody", "--dir", str(keys)]), "'nobody' is not a key")
    _refused(inv(app, ["keys", "revoke", "pub", "--dir", str(keys)]), "current signing key")
    _refused(
        inv(
            app,
            [
                "bundle",
                "build",
                str(tmp_path / "missing"),
                "--version",
                "1",
                "--key",
                str(keys / "pub.key"),
            ],
        ),
        "does not exist",
        "fovea export",
    )
    _refused(
        inv(
            app,
            ["bundle", "build", str(export_dir), "--version", "0", "--key", str(keys / "pub.key")],
        ),
        "start at 1",
    )
    _refused(
        inv(
            app,
            ["bundle", "build", str(export_dir), "--version", "2", "--key", str(keys / "pub.pub")],
        ),
        "is a public key; sign with the private key",
    )
    _refused(
        inv(
            app,
            [
                "bundle",
                "build",
                str(export_dir),
                "--version",
                "1",
                "--key",
                str(keys / "pub.key"),
                "--out",
                str(bundle),
            ],
        ),
        "exists",
    )
    (keys / "pub.key").chmod(0o640)
    _refused(
        inv(
            app,
            ["bundle", "build", str(export_dir), "--version", "2", "--key", str(keys / "pub.key")],
        ),
        "chmod 600",
    )
    (keys / "pub.key").chmod(0o600)

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    _refused(inv(app, ["bundle", "inspect", str(junk)]), "junk.tar", "not a readable bundle")
    _refused(inv(app, ["bundle", "inspect", str(tmp_path / "nope.tar")]), "does not exist")
    _refused(
        inv(app, ["bundle", "verify", str(bundle), "--trusted", str(tmp_path / "no")]),
        "trusted key directory",
    )

    tampered = tmp_path / "tampered.tar"
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "golden.npz":
                data = b"GOLDEN"
            dst.addfile(member, io.BytesIO(data))
    _refused(
        inv(app, ["bundle", "verify", str(tampered), "--trusted", str(keys)]),
        "golden.npz sha256 mismatch",
    )
    stranger = tmp_path / "stranger"
    _ok(["keys", "generate", "eve", "--dir", str(stranger)])
    _refused(
        inv(app, ["bundle", "verify", str(bundle), "--trusted", str(stranger)]), "untrusted key"
    )

    device = tmp_path / "dev"
    _refused(
        inv(agent_app, ["trust", "apply", str(tmp_path / "absent.json"), "--root", str(device)]),
        "cannot be read",
    )
    _refused(
        inv(agent_app, ["trust", "apply", str(junk), "--root", str(device)]),
        "not a signed trust update",
    )
