"""Flash fixtures: a signed tiny bundle, its public key, and plans that reuse this venv."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair


@pytest.fixture(scope="session")
def flash_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signing key pair (private, public)."""
    return generate_keypair(tmp_path_factory.mktemp("flash-keys"), "site")


@pytest.fixture(scope="session")
def flash_bundle(
    tiny_export: Path, flash_keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny export as a signed bundle, version 1."""
    out = tmp_path_factory.mktemp("flash-bundle") / "tiny-v1.tar"
    return build_bundle(tiny_export, out, 1, flash_keys[0])


@pytest.fixture
def make_plan(flash_bundle: Path, flash_keys: tuple[Path, Path]) -> Callable[..., Any]:
    """``make_plan(**overrides)``: a FlashPlan that reuses this machine's venv (no pip)."""
    from deploy.flash import FlashPlan

    def make(**overrides: Any) -> FlashPlan:
        settings: dict[str, Any] = {
            "bundle": flash_bundle, "trusted_key": flash_keys[1], "agent_venv": sys.prefix,
            "supervisor": "process", "listen_host": "127.0.0.1", "ready_timeout": 90.0,
        }  # fmt: skip
        return FlashPlan(**{**settings, **overrides})

    return make
