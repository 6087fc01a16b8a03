"""Audit chain heads kept off the device: what each agent's ``/v1/status`` said its audit chain
ended with, kept by the fleet as the anchor ``fovea-agent audit verify --anchor`` checks.

A head that goes backwards (a lower entry, another key) is not stored over the one kept: the
inventory keeps the older anchor and the poll reports the device, since a chain that shrank was
truncated or its database replaced, and a new key means the chain was re-keyed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class AuditHead(BaseModel):
    """A device's signed audit chain head (``Store.signed_head``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    hash: str = Field(min_length=64, max_length=64)
    time: str
    key_id: str
    mac: str = Field(min_length=64, max_length=64)


def head_of(status: dict[str, Any]) -> AuditHead | None:
    """The head in an agent's ``/v1/status`` body (None from agents that report none);
    ValueError naming what is wrong with a malformed one."""
    raw = status.get("audit_head")
    if raw is None:
        return None
    try:
        return AuditHead.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"the agent's audit_head is malformed: {exc}") from None


def regression(kept: AuditHead | None, new: AuditHead) -> str | None:
    """Why ``new`` must not replace the ``kept`` anchor (None when it may)."""
    if kept is None:
        return None
    if new.key_id != kept.key_id:
        return (
            f"the audit key changed ({kept.key_id} -> {new.key_id}): the chain was re-keyed "
            f"or the device reset; anchor kept at entry {kept.seq} (a rekey made on purpose, "
            "`fovea-agent audit rekey`: accept it with `fovea fleet anchor HOST --accept-rekey`)"
        )
    if new.seq < kept.seq:
        return (
            f"the audit chain went back from entry {kept.seq} to {new.seq}: truncated, or the "
            f"state database was replaced; anchor kept at entry {kept.seq}"
        )
    if new.seq == kept.seq and new.hash != kept.hash:
        return f"audit entry {kept.seq} changed since the last poll: the chain was rewritten"
    return None
