"""Signed trust updates: how a device learns new trusted keys and revocations.

A trust update is a JSON envelope holding the exact bytes of a ``TrustUpdate`` and an Ed25519
signature over them by a key the device already trusts and has not revoked. Its ``sequence``
only grows, so an old update cannot be replayed. The device applies it to ``keys/trusted`` and
``keys/revoked`` under a lock; a journal makes a crashed apply resumable by the same update.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.bundle.durable import fsync_dir, write_atomic
from edge_agent.bundle.keys import Keyring, key_id, verifies
from edge_agent.bundle.manifest import BundleError

MAX_UPDATE_BYTES = 1 << 20
STATE_NAME = "trust.json"
_KID = r"^[0-9a-f]{16}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def public_pem(key: Ed25519PublicKey) -> str:
    """The PEM (SubjectPublicKeyInfo) text of a public key."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _pem_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


class TrustUpdate(_Strict):
    """What a trust update says: keys to trust and keys to revoke (by key id, with their PEM)."""

    schema_version: Literal[1] = 1
    sequence: int = Field(ge=1, description="monotonic; a device refuses one not above its own")
    created: datetime
    signer: str = Field(pattern=_KID, description="key id of the signing key")
    trust: dict[str, str] = Field(default_factory=dict, description="key id -> public key PEM")
    revoke: dict[str, str] = Field(default_factory=dict, description="key id -> public key PEM")
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _keys(self) -> TrustUpdate:
        if not self.trust and not self.revoke:
            raise ValueError("a trust update must trust or revoke at least one key")
        both = sorted(set(self.trust) & set(self.revoke))
        if both:
            raise ValueError(f"keys {both} are both trusted and revoked")
        for kid, pem in {**self.trust, **self.revoke}.items():
            if key_id(_pem_key(pem)) != kid:
                raise ValueError(f"key id {kid} does not match its public key")
        return self

    def to_bytes(self) -> bytes:
        """The canonical bytes that are signed."""
        return (self.model_dump_json(indent=2) + "\n").encode()

    def public_keys(self, which: Literal["trust", "revoke"]) -> dict[str, Ed25519PublicKey]:
        """The trusted or revoked keys of this update by key id."""
        return {kid: _pem_key(pem) for kid, pem in getattr(self, which).items()}


class TrustEnvelope(_Strict):
    """The file on disk: the update's exact JSON text and its base64 Ed25519 signature."""

    schema_version: Literal[1] = 1
    kind: Literal["fovea-trust-update"] = "fovea-trust-update"
    update: str
    signature: str


class _Pending(_Strict):
    sequence: int
    digest: str


class TrustState(_Strict):
    """The device's record of applied trust updates (``keys/trust.json``)."""

    schema_version: Literal[1] = 1
    sequence: int = 0
    digest: str | None = None
    pending: _Pending | None = None


@dataclass(frozen=True)
class TrustApplied:
    """The outcome of applying a trust update on a device."""

    sequence: int
    signer: str
    added: tuple[str, ...]
    revoked: tuple[str, ...]
    trusted_now: tuple[str, ...]


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"field {where}: {first['msg']}"


def read_trust_update(path: Path) -> tuple[TrustUpdate, bytes, bytes]:
    """Parse a trust update file (without checking its signature): (update, bytes, signature)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError(f"trust update {path} cannot be read: {exc.strerror}") from None
    if size > MAX_UPDATE_BYTES:
        raise BundleError(f"trust update {path} is {size} bytes, over {MAX_UPDATE_BYTES}")
    try:
        envelope = TrustEnvelope.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise BundleError(
            f"{path} is not a signed trust update ({_first_error(exc)}); "
            "use a file written by `fovea keys rotate` or `fovea keys revoke`"
        ) from None
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{path}: signature is not base64") from None
    data = envelope.update.encode()
    try:
        update = TrustUpdate.model_validate_json(data)
    except ValidationError as exc:
        raise BundleError(f"{path}: invalid trust update, {_first_error(exc)}") from None
    return update, data, signature


def read_state(keys_dir: Path) -> TrustState:
    """The device's trust state (sequence 0 when no update was ever applied)."""
    path = keys_dir / STATE_NAME
    if not path.is_file():
        return TrustState()
    try:
        return TrustState.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        message = f"{path} is damaged ({_first_error(exc)}); restore it from a backup"
        raise BundleError(message) from None


@contextmanager
def _locked(keys_dir: Path) -> Iterator[None]:
    keys_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys_dir / ".trust.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check(
    update: TrustUpdate, data: bytes, signature: bytes, keys: Keyring, state: TrustState
) -> str:
    """Refuse a replayed, untrusted or harmful update; return its digest."""
    source = f"trust update {update.sequence}"
    digest = hashlib.sha256(data).hexdigest()
    resuming = state.pending is not None and state.pending.digest == digest
    if update.sequence <= state.sequence and not resuming:
        raise BundleError(
            f"{source} is not newer than the last applied update ({state.sequence}): "
            "replayed or out-of-date updates are refused"
        )
    trusted, revoked = keys.load()
    # resuming a crashed apply: its own revocations (maybe of its signer) are already on disk
    signer_key = trusted.get(update.signer) or (revoked.get(update.signer) if resuming else None)
    if update.signer in revoked and not resuming:
        raise BundleError(f"{source} is signed by revoked key {update.signer}")
    if signer_key is None or not verifies(signer_key, signature, data):
        if signer_key is not None:
            raise BundleError(
                f"{source}: bad signature for key {update.signer}: altered after signing"
            )
        raise BundleError(
            f"{source} is signed by key {update.signer}, which this device does not trust; "
            f"trusted here: {sorted(set(trusted) - set(revoked)) or 'none'}"
        )
    sticky = sorted(set(update.trust) & set(revoked))
    if sticky:
        raise BundleError(f"{source} trusts revoked keys {sticky}; revocation is permanent")
    usable = (set(trusted) | set(update.trust)) - set(revoked) - set(update.revoke)
    if not usable:
        raise BundleError(f"{source} would leave this device with no trusted key; refused")
    return digest


def _write_key(directory: Path, kid: str, key: Ed25519PublicKey) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / f"{kid}.pub", public_pem(key).encode())


def _remove_trusted(keys: Keyring, kid: str) -> None:
    for path in sorted(keys.trusted.glob("*.pub")):
        if kid in _file_key_ids(path):
            path.unlink()
    fsync_dir(keys.trusted)


def _file_key_ids(path: Path) -> set[str]:
    try:
        key = _pem_key(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return set()
    return {key_id(key)}


def apply_trust_update(path: Path, keys_dir: Path) -> TrustApplied:
    """Verify the trust update at ``path`` and apply it to ``keys_dir`` (trusted/, revoked/).

    Refuses (``BundleError``) malformed, unsigned, tampered, untrusted, revoked-signer and
    replayed updates, updates that re-trust a revoked key and ones that would leave no usable
    key. Revocations are written before additions; ``trust.json`` records the sequence last.
    """
    update, data, signature = read_trust_update(path)
    keys = Keyring.in_dir(keys_dir)
    with _locked(keys_dir):
        state = read_state(keys_dir)
        digest = _check(update, data, signature, keys, state)
        trusted_before, revoked_before = keys.load()
        pending = _Pending(sequence=update.sequence, digest=digest)
        write_atomic(keys_dir / STATE_NAME, state.model_copy(update={"pending": pending})
                     .model_dump_json().encode())  # fmt: skip
        assert keys.revoked is not None
        for kid, key in update.public_keys("revoke").items():
            _write_key(keys.revoked, kid, key)
            _remove_trusted(keys, kid)
        for kid, key in update.public_keys("trust").items():
            if kid not in trusted_before:
                _write_key(keys.trusted, kid, key)
        done = TrustState(sequence=update.sequence, digest=digest)
        write_atomic(keys_dir / STATE_NAME, done.model_dump_json().encode())
        trusted, revoked = keys.load()
    return TrustApplied(
        sequence=update.sequence,
        signer=update.signer,
        added=tuple(sorted(set(update.trust) - set(trusted_before))),
        revoked=tuple(sorted(set(update.revoke) - set(revoked_before))),
        trusted_now=tuple(sorted(set(trusted) - set(revoked))),
    )
