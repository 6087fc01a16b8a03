"""Fixtures for bundle tests: a signing key pair, a keyring that trusts it, a signed bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.bundle import Keyring


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair (private, public) in its own directory."""
    return generate_keypair(tmp_path / "signing", "publisher")


@pytest.fixture
def keyring(tmp_path: Path, signing_key: tuple[Path, Path]) -> Keyring:
    """A device keyring that trusts ``signing_key`` and revokes nothing."""
    keys = Keyring.in_dir(tmp_path / "keys")
    keys.trusted.mkdir(parents=True)
    (keys.trusted / "publisher.pub").write_bytes(signing_key[1].read_bytes())
    return keys


@pytest.fixture
def bundle(tiny_export: Path, tmp_path: Path, signing_key: tuple[Path, Path]) -> Path:
    """A signed version-2 bundle of the tiny export."""
    return build_bundle(tiny_export, tmp_path / "model-v2.tar", 2, signing_key[0])
