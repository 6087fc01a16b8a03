"""Fixtures for install tests: a device root that trusts a publisher, and signed bundles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.install import DeviceRoot


@pytest.fixture
def publisher_key(tmp_path: Path) -> tuple[Path, Path]:
    """The publisher's key pair (private, public)."""
    return generate_keypair(tmp_path / "publisher", "publisher")


@pytest.fixture
def device(tmp_path: Path, publisher_key: tuple[Path, Path]) -> DeviceRoot:
    """An empty device root that trusts the publisher's key."""
    root = DeviceRoot(tmp_path / "device").ensure()
    (root.keys.trusted / "publisher.pub").write_bytes(publisher_key[1].read_bytes())
    return root


@pytest.fixture
def make_bundle(
    tiny_export: Path, tmp_path: Path, publisher_key: tuple[Path, Path]
) -> Callable[[int], Path]:
    """Build (once per version) a signed bundle of the tiny export with the given version."""

    def make(version: int) -> Path:
        out = tmp_path / "bundles" / f"model-v{version}.tar"
        return out if out.exists() else build_bundle(tiny_export, out, version, publisher_key[0])

    return make
