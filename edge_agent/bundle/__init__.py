"""Signed model bundles: manifest schema, Ed25519 keys, build and sign, open and verify."""

from edge_agent.bundle.build import build_bundle, collect_files, manifest_from_export
from edge_agent.bundle.keys import (
    Keyring,
    generate_keypair,
    key_id,
    load_key_dir,
    load_private_key,
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
    agent_version,
    manifest_digest,
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
    "agent_version",
    "build_bundle",
    "check_signature",
    "check_versions",
    "collect_files",
    "generate_keypair",
    "key_id",
    "load_key_dir",
    "load_private_key",
    "load_public_key",
    "manifest_digest",
    "manifest_from_export",
    "open_bundle",
    "verify_tree",
]
