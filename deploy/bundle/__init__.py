"""Bundles on the workstation: build and sign one from an export, verify and inspect it.

The format is the device's (``edge_agent.bundle``); this side holds the private key.
"""

from deploy.bundle.packing import build_bundle, collect_files, manifest_from_export
from deploy.bundle.summary import BundleSummary, build, default_out, inspect, keyring_of, verify

__all__ = [
    "BundleSummary",
    "build",
    "build_bundle",
    "collect_files",
    "default_out",
    "inspect",
    "keyring_of",
    "manifest_from_export",
    "verify",
]
