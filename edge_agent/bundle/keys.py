"""Ed25519 signing keys: generate, load (refusing exposed private keys), identify, trust."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.bundle.manifest import BundleError


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key (PEM SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise BundleError(f"public key {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {path} is not an Ed25519 key")
    return key


def load_key_dir(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` key in ``directory`` by key id (empty when the directory is missing)."""
    if not directory.is_dir():
        return {}
    keys = (load_public_key(p) for p in sorted(directory.glob("*.pub")) if p.is_file())
    return {key_id(k): k for k in keys}


def verifies(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Keyring:
    """Where trusted and revoked public keys live (``keys/trusted``, ``keys/revoked``)."""

    trusted: Path
    revoked: Path | None = None

    @classmethod
    def in_dir(cls, keys_dir: Path) -> Keyring:
        """The keyring of a ``keys/`` directory with ``trusted/`` and ``revoked/`` inside."""
        return cls(trusted=keys_dir / "trusted", revoked=keys_dir / "revoked")

    def load(self) -> tuple[dict[str, Ed25519PublicKey], dict[str, Ed25519PublicKey]]:
        """(trusted, revoked) public keys by key id."""
        revoked = load_key_dir(self.revoked) if self.revoked else {}
        return load_key_dir(self.trusted), revoked
