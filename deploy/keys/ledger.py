"""The workstation's trust ledger and the signed trust updates it issues to devices.

A key directory holds the signing keys (``NAME.key`` 0600 + ``NAME.pub``), revoked ones under
``revoked/``, the ledger (``ledger.json``: every key, its status, the current signing key, the
last sequence number) and every update issued (``updates/trust-NNNN.json``). Each update lists
all trusted and all revoked keys, so a device that missed one catches up with the next.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploy.keys.signing import load_private_key, sign_trust_update
from edge_agent.bundle import (
    BundleError,
    TrustApplied,
    TrustUpdate,
    apply_trust_update,
    read_trust_update,
    write_atomic,
)
from edge_agent.install import DeviceRoot

__all__ = [
    "LEDGER_NAME",
    "Ledger",
    "LedgerKey",
    "TrustApplied",
    "TrustUpdate",
    "apply_update",
    "issue_update",
    "load_ledger",
    "read_update",
    "save_ledger",
]

LEDGER_NAME = "ledger.json"
UPDATES_DIR = "updates"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LedgerKey(_Strict):
    """One key the workstation made: its name, public key, and whether devices trust it."""

    name: str
    pem: str
    status: Literal["trusted", "revoked"] = "trusted"
    created: datetime
    revoked_at: datetime | None = None


class Ledger(_Strict):
    """Every key of a key directory, the current signing key and the last update's sequence."""

    schema_version: Literal[1] = 1
    current: str | None = Field(None, description="key id of the key that signs")
    sequence: int = Field(0, ge=0, description="sequence of the last trust update issued")
    keys: dict[str, LedgerKey] = Field(default_factory=dict)

    def current_key(self, key_dir: Path) -> tuple[str, LedgerKey]:
        """The current signing key (id, record); raises when there is none."""
        if self.current is None or self.current not in self.keys:
            raise BundleError(f"{key_dir} has no current signing key; run `fovea keys generate`")
        return self.current, self.keys[self.current]

    def by_status(self, status: Literal["trusted", "revoked"]) -> dict[str, str]:
        """Key id -> PEM of the keys with ``status``."""
        return {kid: k.pem for kid, k in self.keys.items() if k.status == status}


def load_ledger(key_dir: Path) -> Ledger | None:
    """The ledger of ``key_dir``, or None when the directory has none yet."""
    path = key_dir / LEDGER_NAME
    if not path.is_file():
        return None
    try:
        return Ledger.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleError(f"{path} is damaged: field {where}: {first['msg']}") from None


def save_ledger(key_dir: Path, ledger: Ledger) -> None:
    """Write the ledger atomically."""
    write_atomic(key_dir / LEDGER_NAME, (ledger.model_dump_json(indent=2) + "\n").encode())


def issue_update(key_dir: Path, ledger: Ledger, *, signer: str, note: str = "") -> Path:
    """Sign the next trust update (all trusted and revoked keys of ``ledger``) with ``signer``.

    ``signer`` is a key id whose private key ``NAME.key`` lies in ``key_dir``. Advances
    ``ledger.sequence`` (the caller saves the ledger) and returns the update's path.
    """
    record = ledger.keys.get(signer)
    if record is None or record.status != "trusted":
        raise BundleError(f"key {signer} is not a trusted key of {key_dir}; it cannot sign")
    private = load_private_key(key_dir / f"{record.name}.key")
    sequence = ledger.sequence + 1
    update = TrustUpdate(
        sequence=sequence,
        created=datetime.now(UTC),
        signer=signer,
        trust=ledger.by_status("trusted"),
        revoke=ledger.by_status("revoked"),
        note=note,
    )
    out = key_dir / UPDATES_DIR / f"trust-{sequence:04d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, sign_trust_update(update, private))
    ledger.sequence = sequence
    return out


def read_update(path: Path) -> TrustUpdate:
    """Parse a trust update file (its signature is checked only when a device applies it)."""
    return read_trust_update(path)[0]


def apply_update(path: Path, root: Path) -> TrustApplied:
    """Apply a signed trust update to the device root ``root`` (as `fovea-agent trust apply`)."""
    return apply_trust_update(path, DeviceRoot(root).ensure().path / "keys")
