"""Signing keys on the workstation: generate, rotate (with a signed update), revoke."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deploy.keys.ledger import Ledger, LedgerKey, issue_update, load_ledger, save_ledger
from deploy.keys.signing import generate_keypair
from edge_agent.bundle import BundleError, fsync_dir, key_id, load_public_key, public_pem

__all__ = [
    "DEFAULT_KEY_DIR",
    "KeyInfo",
    "generate_key",
    "key_dir_from_env",
    "list_keys",
    "resolve_key",
    "revoke_key",
    "rotate_key",
]

DEFAULT_KEY_DIR = Path(".fovea/keys")
REVOKED_DIR = "revoked"


@dataclass(frozen=True)
class KeyInfo:
    """A key of a key directory: id, name, status, paths; ``update`` is the trust update issued."""

    key_id: str
    name: str
    status: str
    private: Path
    public: Path
    current: bool = False
    update: Path | None = None


def key_dir_from_env() -> Path:
    """The key directory: ``$FOVEA_KEY_DIR`` or ``.fovea/keys``."""
    return Path(os.environ.get("FOVEA_KEY_DIR", DEFAULT_KEY_DIR))


def _info(key_dir: Path, ledger: Ledger, kid: str, update: Path | None = None) -> KeyInfo:
    record = ledger.keys[kid]
    where = key_dir / REVOKED_DIR if record.status == "revoked" else key_dir
    return KeyInfo(
        key_id=kid, name=record.name, status=record.status,
        private=where / f"{record.name}.key", public=where / f"{record.name}.pub",
        current=kid == ledger.current, update=update,
    )  # fmt: skip


def _new_key(key_dir: Path, name: str, ledger: Ledger) -> str:
    _, public = generate_keypair(key_dir, name)
    key = load_public_key(public)
    kid = key_id(key)
    ledger.keys[kid] = LedgerKey(name=name, pem=public_pem(key), created=datetime.now(UTC))
    return kid


def generate_key(key_dir: Path, name: str) -> KeyInfo:
    """Create the first signing key of ``key_dir`` (private key mode 0600) and its ledger.

    Devices are given its public key when flashed. A directory that already has a signing key
    is refused: use ``rotate_key`` so devices learn the new key through a signed update.
    """
    ledger = load_ledger(key_dir)
    if ledger is not None and ledger.current is not None:
        raise BundleError(
            f"{key_dir} already has signing key {ledger.current} "
            f"({ledger.keys[ledger.current].name}); use `fovea keys rotate` to replace it, "
            "or --dir for a separate key set"
        )
    ledger = ledger or Ledger()
    kid = _new_key(key_dir, name, ledger)
    ledger.current = kid
    save_ledger(key_dir, ledger)
    return _info(key_dir, ledger, kid)


def _free_name(key_dir: Path, base: str) -> str:
    stem = base.rsplit("-r", 1)[0] if base.rsplit("-r", 1)[-1].isdigit() else base
    n = 2
    while any((d / f"{stem}-r{n}.{ext}").exists() for d in (key_dir, key_dir / REVOKED_DIR)
              for ext in ("key", "pub")):  # fmt: skip
        n += 1
    return f"{stem}-r{n}"


def _require_ledger(key_dir: Path) -> Ledger:
    ledger = load_ledger(key_dir)
    if ledger is None:
        raise BundleError(f"{key_dir} has no {key_dir / 'ledger.json'}; run `fovea keys generate`")
    return ledger


def rotate_key(key_dir: Path, name: str | None = None) -> KeyInfo:
    """Make a new signing key and a trust update, signed by the current key, that adds it.

    The new key becomes the current one; the old key stays trusted until revoked.
    Returns the new key with ``update`` set to the update file to apply on every device.
    """
    ledger = _require_ledger(key_dir)
    old, record = ledger.current_key(key_dir)
    new = _new_key(key_dir, name or _free_name(key_dir, record.name), ledger)
    update = issue_update(key_dir, ledger, signer=old, note=f"rotate {old} -> {new}")
    ledger.current = new
    save_ledger(key_dir, ledger)
    return _info(key_dir, ledger, new, update)


def resolve_key(ledger: Ledger, ref: str, key_dir: Path) -> str:
    """The key id that ``ref`` names: a key id, a unique key id prefix, or a key name."""
    hits = [kid for kid, k in ledger.keys.items() if ref in (kid, k.name)]
    hits = hits or [kid for kid in ledger.keys if len(ref) >= 4 and kid.startswith(ref)]
    if len(hits) != 1:
        known = ", ".join(f"{kid} ({k.name}, {k.status})" for kid, k in ledger.keys.items())
        what = "matches several keys" if hits else "is not a key"
        raise BundleError(f"{ref!r} {what} of {key_dir}; keys: {known or 'none'}")
    return hits[0]


def revoke_key(key_dir: Path, ref: str) -> KeyInfo:
    """Revoke a key with a trust update signed by the current key; move its files to revoked/.

    The current signing key cannot revoke itself: rotate first, then revoke the old key.
    """
    ledger = _require_ledger(key_dir)
    kid = resolve_key(ledger, ref, key_dir)
    current, _ = ledger.current_key(key_dir)
    record = ledger.keys[kid]
    if record.status == "revoked":
        raise BundleError(f"key {kid} ({record.name}) is already revoked")
    if kid == current:
        raise BundleError(
            f"key {kid} ({record.name}) is the current signing key; run `fovea keys rotate` "
            "first, apply that update on the devices, then revoke this key"
        )
    record.status, record.revoked_at = "revoked", datetime.now(UTC)
    update = issue_update(key_dir, ledger, signer=current, note=f"revoke {kid}")
    save_ledger(key_dir, ledger)
    revoked = key_dir / REVOKED_DIR
    revoked.mkdir(exist_ok=True)
    for ext in ("key", "pub"):
        path = key_dir / f"{record.name}.{ext}"
        if path.exists():
            os.replace(path, revoked / path.name)
    fsync_dir(revoked)
    fsync_dir(key_dir)
    return _info(key_dir, ledger, kid, update)


def list_keys(key_dir: Path) -> list[KeyInfo]:
    """Every key of ``key_dir`` (empty when it has no ledger)."""
    ledger = load_ledger(key_dir)
    return [] if ledger is None else [_info(key_dir, ledger, kid) for kid in ledger.keys]
