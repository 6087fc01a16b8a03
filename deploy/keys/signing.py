"""Private signing keys on the workstation: create a key pair, load a private key safely, sign.

The device only ever sees public keys (``edge_agent.bundle``); private keys stay here.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import BundleError, TrustEnvelope, TrustUpdate, fsync_dir, key_id

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


def sign_trust_update(update: TrustUpdate, private_key: Ed25519PrivateKey) -> bytes:
    """The envelope bytes of ``update`` signed by ``private_key`` (whose id must be the signer)."""
    if key_id(private_key.public_key()) != update.signer:
        raise BundleError(f"update names signer {update.signer}, the key is another one")
    data = update.to_bytes()
    envelope = TrustEnvelope(
        update=data.decode(), signature=base64.b64encode(private_key.sign(data)).decode()
    )
    return (envelope.model_dump_json(indent=2) + "\n").encode()
