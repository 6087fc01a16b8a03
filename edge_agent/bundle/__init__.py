"""Signed model bundles on the device: the manifest schema, public keys, open, verify, trust.

The workstation builds and signs bundles (``deploy.bundle``, ``deploy.keys``); the device reads
them with what is here, and both agree on the format through :mod:`.manifest`.
"""

from edge_agent.bundle.durable import fsync_dir, write_atomic
from edge_agent.bundle.keys import (
    Keyring,
    key_id,
    load_key_dir,
    load_public_key,
)
from edge_agent.bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    AccuracyBudget,
    BundleError,
    FileEntry,
    Manifest,
    PrecisionEntry,
    Thresholds,
    manifest_digest,
    parse_version,
)
from edge_agent.bundle.trust import (
    TrustApplied,
    TrustEnvelope,
    TrustState,
    TrustUpdate,
    apply_trust_update,
    public_pem,
    read_state,
    read_trust_update,
)
from edge_agent.bundle.verify import check_signature, check_versions, open_bundle, verify_tree

__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "AccuracyBudget",
    "BundleError",
    "FileEntry",
    "Keyring",
    "Manifest",
    "PrecisionEntry",
    "Thresholds",
    "TrustApplied",
    "TrustEnvelope",
    "TrustState",
    "TrustUpdate",
    "apply_trust_update",
    "check_signature",
    "check_versions",
    "fsync_dir",
    "key_id",
    "load_key_dir",
    "load_public_key",
    "manifest_digest",
    "open_bundle",
    "parse_version",
    "public_pem",
    "read_state",
    "read_trust_update",
    "verify_tree",
    "write_atomic",
]
