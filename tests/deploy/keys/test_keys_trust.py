"""Key rotation and revocation reach the device only through signed, fresh trust updates."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy import bundle as bundles
from deploy.keys import (
    KeyInfo,
    generate_key,
    load_private_key,
    revoke_key,
    rotate_key,
    sign_trust_update,
)
from deploy.keys.ledger import apply_update, load_ledger, read_update
from edge_agent.bundle import BundleError, TrustUpdate, public_pem, read_state
from edge_agent.install import DeviceRoot, install


def _usable(device: DeviceRoot) -> set[str]:
    trusted, revoked = device.keys.load()
    return set(trusted) - set(revoked)


def test_generate_writes_a_0600_key_and_refuses_a_second(key_dir: Path, first_key: KeyInfo) -> None:
    assert stat.S_IMODE(first_key.private.stat().st_mode) == 0o600
    assert first_key.current and first_key.status == "trusted"
    ledger = load_ledger(key_dir)
    assert ledger is not None and ledger.current == first_key.key_id and ledger.sequence == 0
    with pytest.raises(BundleError, match=r"already has signing key .*`fovea keys rotate`"):
        generate_key(key_dir, "another")


def test_signing_refuses_a_key_others_can_read(export_dir: Path, first_key: KeyInfo) -> None:
    first_key.private.chmod(0o644)
    with pytest.raises(BundleError, match=r"accessible by group or others .* chmod 600"):
        bundles.build(export_dir, 1, first_key.private)
    with pytest.raises(BundleError, match="chmod 600"):
        rotate_key(first_key.private.parent)


def test_rotate_then_the_device_trusts_the_new_key_and_installs_its_bundle(
    key_dir: Path, first_key: KeyInfo, device: DeviceRoot, export_dir: Path, tmp_path: Path
) -> None:
    new = rotate_key(key_dir)
    assert new.current and new.update is not None and new.key_id != first_key.key_id
    assert stat.S_IMODE(new.private.stat().st_mode) == 0o600
    update = read_update(new.update)
    assert update.sequence == 1 and update.signer == first_key.key_id
    assert set(update.trust) == {first_key.key_id, new.key_id}

    bundle = bundles.build(export_dir, 1, new.private, tmp_path / "v1.tar")
    with pytest.raises(BundleError, match="untrusted key"):
        install(device, bundle)  # the device does not know the new key yet
    applied = apply_update(new.update, device.path)
    assert applied.added == (new.key_id,) and applied.sequence == 1
    assert _usable(device) == {first_key.key_id, new.key_id}
    assert install(device, bundle).manifest.signer == new.key_id


def test_revoke_then_a_bundle_signed_with_the_revoked_key_is_refused(
    key_dir: Path, first_key: KeyInfo, device: DeviceRoot, export_dir: Path, tmp_path: Path
) -> None:
    old_bundle = bundles.build(export_dir, 2, first_key.private, tmp_path / "old-v2.tar")
    new = rotate_key(key_dir)
    with pytest.raises(BundleError, match="current signing key; run `fovea keys rotate`"):
        revoke_key(key_dir, new.key_id)
    assert new.update is not None
    apply_update(new.update, device.path)
    revoked = revoke_key(key_dir, first_key.key_id[:8])
    assert revoked.status == "revoked" and revoked.private.parent.name == "revoked"
    assert not first_key.private.exists()
    assert revoked.update is not None
    applied = apply_update(revoked.update, device.path)
    assert applied.sequence == 2 and applied.revoked == (first_key.key_id,)
    assert _usable(device) == {new.key_id}
    assert list(device.keys.trusted.glob("*.pub")) != []
    with pytest.raises(BundleError, match="revoked key"):
        install(device, old_bundle)
    with pytest.raises(BundleError, match="revoked key"):
        bundles.verify(old_bundle, key_dir)
    good = bundles.build(export_dir, 3, new.private, tmp_path / "v3.tar")
    assert install(device, good).manifest.version == 3


def test_replayed_and_out_of_date_updates_are_refused(
    key_dir: Path, first_key: KeyInfo, device: DeviceRoot
) -> None:
    one = rotate_key(key_dir).update
    two = rotate_key(key_dir).update
    assert one is not None and two is not None
    apply_update(one, device.path)
    with pytest.raises(BundleError, match="not newer than the last applied update"):
        apply_update(one, device.path)
    apply_update(two, device.path)
    with pytest.raises(BundleError, match=r"update 1 is not newer .*\(2\)"):
        apply_update(one, device.path)
    assert read_state(device.path / "keys").sequence == 2


def test_unsigned_tampered_and_untrusted_updates_are_refused(
    key_dir: Path, first_key: KeyInfo, device: DeviceRoot, tmp_path: Path
) -> None:
    new = rotate_key(key_dir)
    assert new.update is not None
    envelope = json.loads(new.update.read_text())
    before = sorted(p.name for p in device.keys.trusted.iterdir())

    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(envelope["update"])  # the bare update, no envelope or signature
    with pytest.raises(BundleError, match="is not a signed trust update"):
        apply_update(unsigned, device.path)

    blank = tmp_path / "blank-signature.json"
    blank.write_text(json.dumps({**envelope, "signature": ""}))
    with pytest.raises(BundleError, match=r"bad signature .* altered after signing"):
        apply_update(blank, device.path)

    tampered = tmp_path / "tampered.json"
    update = json.loads(envelope["update"])
    update["note"] = "innocent"
    tampered.write_text(json.dumps({**envelope, "update": json.dumps(update)}))
    with pytest.raises(BundleError, match="bad signature"):
        apply_update(tampered, device.path)

    stranger = generate_key(tmp_path / "stranger", "mallory")
    forged = rotate_key(tmp_path / "stranger").update
    assert forged is not None
    with pytest.raises(BundleError, match=f"key {stranger.key_id}, which this device does not"):
        apply_update(forged, device.path)

    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00not json")
    with pytest.raises(BundleError, match=r"garbage.json is not a signed trust update"):
        apply_update(garbage, device.path)
    assert sorted(p.name for p in device.keys.trusted.iterdir()) == before
    assert read_state(device.path / "keys").sequence == 0


def _signed(path: Path, key: KeyInfo, **fields: object) -> Path:
    private = load_private_key(key.private)
    update = TrustUpdate(created=datetime.now(UTC), signer=key.key_id, **fields)
    path.write_bytes(sign_trust_update(update, private))
    return path


def test_revocation_is_permanent_and_the_last_key_cannot_go(
    key_dir: Path, first_key: KeyInfo, device: DeviceRoot, tmp_path: Path
) -> None:
    pem = public_pem(load_private_key(first_key.private).public_key())
    last = _signed(tmp_path / "last.json", first_key, sequence=5, revoke={first_key.key_id: pem})
    with pytest.raises(BundleError, match="no trusted key; refused"):
        apply_update(last, device.path)

    new = rotate_key(key_dir)
    assert new.update is not None
    apply_update(new.update, device.path)
    revoke = revoke_key(key_dir, "publisher").update
    assert revoke is not None
    apply_update(revoke, device.path)
    new_pem = public_pem(load_private_key(new.private).public_key())
    again = _signed(
        tmp_path / "again.json", new, sequence=9, trust={first_key.key_id: pem, new.key_id: new_pem}
    )
    with pytest.raises(BundleError, match=r"trusts revoked keys .* permanent"):
        apply_update(again, device.path)


def test_a_crashed_apply_is_finished_by_the_same_update(
    key_dir: Path,
    first_key: KeyInfo,
    device: DeviceRoot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The signer revokes itself and adds a new key; the apply dies after the revocation."""
    import edge_agent.bundle.trust as trust

    new = generate_key(tmp_path / "next", "next")
    pem = public_pem(load_private_key(first_key.private).public_key())
    new_pem = public_pem(load_private_key(new.private).public_key())
    update = _signed(
        tmp_path / "swap.json", first_key, sequence=1,
        trust={new.key_id: new_pem}, revoke={first_key.key_id: pem},
    )  # fmt: skip
    real = trust._write_key
    calls: list[Path] = []

    def dies_on_trusted(directory: Path, kid: str, key: object) -> None:
        calls.append(directory)
        if directory.name == "trusted":
            raise OSError("power lost")
        real(directory, kid, key)  # type: ignore[arg-type]

    monkeypatch.setattr(trust, "_write_key", dies_on_trusted)
    with pytest.raises(OSError, match="power lost"):
        apply_update(update, device.path)
    monkeypatch.undo()
    assert read_state(device.path / "keys").pending is not None
    assert _usable(device) == set()  # mid-apply: the old key is revoked, the new one not yet
    applied = apply_update(update, device.path)
    assert applied.trusted_now == (new.key_id,)
    assert read_state(device.path / "keys").sequence == 1
    with pytest.raises(BundleError, match="not newer"):
        apply_update(update, device.path)
