"""The device's audit key: 32 random bytes in a file of its own (mode 0600), never in state.db.

The key authenticates audit entries (HMAC-SHA256) and the chain head the fleet keeps as an
anchor. HMAC rather than an Ed25519 signature: the only party that checks entries is the device
itself (``fovea-agent audit verify``), an HMAC costs about a microsecond on the screening path
where a signature costs tens, and an anchor's strength comes from being kept off the device, not
from who can check its signature. Someone who can read this file can forge entries; the fleet's
anchor still exposes every entry they rewrite below it (and a replaced key: the anchor's own MAC
no longer verifies).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from edge_agent.bundle import fsync_dir
from edge_agent.store.schema import StoreError

KEY_BYTES = 32


def load_or_create(path: Path) -> bytes:
    """The key in ``path``, created first (atomically, 0600) when there is none.

    Raises StoreError naming the file when it is readable by others or is not a key.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile: theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return _read(path)


def key_id(key: bytes) -> str:
    """A short public name of ``key`` (it reveals nothing of it): to notice a replaced key."""
    return hashlib.sha256(b"fovea-audit-key-id\0" + key).hexdigest()[:16]


def _read(path: Path) -> bytes:
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise StoreError(
            f"audit key {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run 'chmod 600 {path}'"
        )
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise StoreError(
            f"audit key {path} holds {len(key)} bytes, not {KEY_BYTES}: restore the device's key"
        )
    return key
