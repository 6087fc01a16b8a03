"""Ed25519 signing keys: generate, load (refusing exposed private keys), identify, trust."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.bundle.durable import fsync_dir
from edge_agent.bundle.manifest import BundleError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id of a public key: the first 16 hex digits of sha256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair ``name.key`` (mode 0600) and ``name.pub`` into ``directory``.

    Refuses to overwrite an existing key. Returns (private_path, public_path).
    """
    if not _NAME_RE.match(name):
        raise BundleError(f"key name {name!r}: use letters, digits, '.', '_' or '-'")
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise BundleError(f"{path} exists; choose another name or move the old key away")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, public_pem, 0o644)
    fsync_dir(directory)
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # the umask may have removed bits; set exactly what we mean
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key, refusing one that group or others can read or write."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BundleError(f"private key {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"private key {path} is not a regular file")
    if info.st_mode & 0o077:
        raise BundleError(
            f"private key {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"private key {path} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"private key {path} is not an Ed25519 key")
    return key


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
