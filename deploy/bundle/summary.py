"""Build, verify and inspect signed bundles (over ``edge_agent.bundle``, which owns the format)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.bundle.packing import build_bundle
from edge_agent.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleError,
    Keyring,
    Manifest,
    check_signature,
    open_bundle,
)

__all__ = ["BundleSummary", "build", "default_out", "inspect", "keyring_of", "verify"]

_MAX_MANIFEST = 4 << 20


@dataclass(frozen=True)
class BundleSummary:
    """What a bundle holds, read from its manifest; ``verified_by`` is set only when checked."""

    path: Path
    size: int
    digest: str
    manifest: Manifest
    verified_by: str | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary."""
        m = self.manifest
        return {
            "path": str(self.path), "size": self.size, "digest": self.digest,
            "name": m.name, "family": m.family, "version": m.version,
            "created": m.created.isoformat(), "min_agent_version": m.min_agent_version,
            "signer": m.signer, "verified_by": self.verified_by,
            "thresholds": m.thresholds.model_dump(),
            "accuracy_budget_points": m.accuracy_budget_points.model_dump(),
            "precisions": {k: v.model_dump() for k, v in m.precisions.items()},
            "files": {k: v.size for k, v in m.files.items()},
        }  # fmt: skip


def default_out(export_dir: Path, version: int) -> Path:
    """``<export_dir's parent>/<model name>-v<version>.tar`` (name from export.json if readable)."""
    name = export_dir.resolve().name
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        name = str(json.loads((export_dir / "export.json").read_text())["model"]["name"])
    return export_dir.resolve().parent / f"{name}-v{version}.tar"


def build(
    export_dir: Path,
    version: int,
    key: Path,
    out: Path | None = None,
    *,
    min_agent_version: str | None = None,
) -> Path:
    """Build and sign a bundle of a ``fovea export`` directory; return the bundle's path.

    Refuses a private key that group or others can read, and an existing ``out``.
    """
    head = b""
    if not export_dir.is_dir():
        raise BundleError(f"export directory {export_dir} does not exist; run `fovea export`")
    if version < 1:
        raise BundleError(f"--version {version}: bundle versions start at 1")
    with contextlib.suppress(OSError), key.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"-----BEGIN PUBLIC KEY"):
        raise BundleError(f"{key} is a public key; sign with the private key (NAME.key)")
    target = out or default_out(export_dir, version)
    if target.exists():
        raise BundleError(f"{target} exists; choose another --out or a new --version")
    return build_bundle(export_dir, target, version, key, min_agent_version=min_agent_version)


def keyring_of(trusted: Path) -> Keyring:
    """The keyring of a directory of ``.pub`` keys: a device ``keys/`` dir (trusted/, revoked/),
    a ``fovea keys`` directory (revoked keys under revoked/), or a plain directory of keys."""
    if not trusted.is_dir():
        raise BundleError(f"trusted key directory {trusted} does not exist")
    if (trusted / "trusted").is_dir():
        return Keyring.in_dir(trusted)
    return Keyring(trusted=trusted, revoked=trusted / "revoked")


def verify(bundle: Path, trusted: Path) -> BundleSummary:
    """Fully verify ``bundle`` as a device would (signature, trust, every file's sha256)."""
    keys = keyring_of(trusted)
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist")
    with tempfile.TemporaryDirectory(prefix="fovea-verify-") as tmp:
        manifest = open_bundle(bundle, Path(tmp) / "bundle", keys)
    summary = inspect(bundle)
    return BundleSummary(
        path=bundle, size=summary.size, digest=summary.digest, manifest=manifest,
        verified_by=manifest.signer,
    )  # fmt: skip


def inspect(bundle: Path, trusted: Path | None = None) -> BundleSummary:
    """Read a bundle's manifest; with ``trusted``, also check the manifest's signature."""
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist")
    try:
        with tarfile.open(bundle, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isreg()}
            parts: dict[str, bytes] = {}
            for name in (MANIFEST_NAME, SIGNATURE_NAME):
                member = members.get(name)
                if member is None or member.size > _MAX_MANIFEST:
                    raise BundleError(f"{bundle}: no {name}; this is not a signed bundle")
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file
                parts[name] = stream.read()
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle tar: {exc}") from None
    data, signature = parts[MANIFEST_NAME], parts[SIGNATURE_NAME]
    if trusted is not None:
        manifest = check_signature(data, signature, keyring_of(trusted), str(bundle))
    else:
        manifest = Manifest.from_bytes(data, str(bundle))
    return BundleSummary(
        path=bundle, size=bundle.stat().st_size, digest=hashlib.sha256(data).hexdigest(),
        manifest=manifest, verified_by=manifest.signer if trusted is not None else None,
    )  # fmt: skip
