"""Small file operations on a device, built on the Transport protocol only."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from deploy.transport import RunResult, Transport


async def sh(transport: Transport, script: str, *, timeout: float | None = None) -> RunResult:
    """Run a POSIX shell snippet on the device."""
    return await transport.run(["sh", "-c", script], timeout=timeout)


async def read_text(transport: Transport, path: str) -> str | None:
    """The text of a file on the device, or None when it does not exist."""
    res = await transport.run(["cat", "--", path])
    return res.stdout if res.ok else None


async def write_text(transport: Transport, path: str, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` on the device unless it already holds exactly that.

    Returns True when the file changed. The write goes through the transport's atomic
    ``put`` (a ``.part`` file renamed into place).
    """
    if await read_text(transport, path) == text:
        return False
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="fovea-flash-") as tmp:
        local = Path(tmp) / f"{Path(path).name}.{digest}"
        local.write_text(text)
        local.chmod(mode)
        await transport.put(local, path)
    return True
