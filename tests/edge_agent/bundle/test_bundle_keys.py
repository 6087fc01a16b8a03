"""Ed25519 keys: private keys are 0600, exposed ones are refused, ids are stable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.keys import generate_keypair, load_private_key
from edge_agent.bundle import BundleError, Keyring, key_id, load_public_key


def test_generated_private_key_is_owner_only(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path, "site-1")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    key = load_private_key(private)
    assert key_id(key.public_key()) == key_id(load_public_key(public))
    assert len(key_id(key.public_key())) == 16


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_private_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    private, _ = generate_keypair(tmp_path, "k")
    private.chmod(mode)
    with pytest.raises(BundleError, match="chmod 600"):
        load_private_key(private)


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path, "k")
    before = private.read_bytes()
    with pytest.raises(BundleError, match="exists"):
        generate_keypair(tmp_path, "k")
    assert private.read_bytes() == before


def test_bad_key_names_and_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="key name"):
        generate_keypair(tmp_path, "../escape")
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(BundleError, match="not a PEM public key"):
        load_public_key(junk)


def test_distinct_keys_have_distinct_ids(tmp_path: Path) -> None:
    _, a = generate_keypair(tmp_path, "a")
    _, b = generate_keypair(tmp_path, "b")
    assert key_id(load_public_key(a)) != key_id(load_public_key(b))
    keys = Keyring(trusted=tmp_path)
    trusted, revoked = keys.load()
    assert set(trusted) == {key_id(load_public_key(a)), key_id(load_public_key(b))}
    assert revoked == {}
