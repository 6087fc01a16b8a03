"""Fixtures for keys and bundle tests: a small export directory, a key directory, a device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.keys import KeyInfo, generate_key
from edge_agent.install import DeviceRoot
from models.preprocess import PreprocessSpec


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """A minimal `fovea export` directory: export.json, an fp32 and an int8 model file."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.fp32.onnx").write_bytes(b"\x08\x07" * 3000)
    (out / "model.int8.onnx").write_bytes(b"\x08\x09" * 800)
    (out / "golden.npz").write_bytes(b"golden")
    info = {
        "schema_version": 1,
        "model": {"name": "tiny-student", "family": "resnet"},
        "preprocess": PreprocessSpec(size=32).model_dump(mode="json"),
        "budget": {"int8_points": 1.0, "fp16_points": 0.5},
        "operating_point": {"referral_threshold": 0.4321},
        "precisions": {
            "fp32": {"file": "model.fp32.onnx", "size_bytes": 6000, "heldout": {"accuracy": 81.5}},
            "int8": {"file": "model.int8.onnx", "size_bytes": 1600, "heldout": {"accuracy": 80.9}},
        },
    }
    (out / "export.json").write_text(json.dumps(info))
    return out


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """The workstation's key directory."""
    return tmp_path / "keys"


@pytest.fixture
def first_key(key_dir: Path) -> KeyInfo:
    """The first signing key of ``key_dir``."""
    return generate_key(key_dir, "publisher")


@pytest.fixture
def device(tmp_path: Path, first_key: KeyInfo) -> DeviceRoot:
    """A device root flashed with the first key's public key (as `fovea flash` installs it)."""
    root = DeviceRoot(tmp_path / "device").ensure()
    (root.keys.trusted / "publisher.pub").write_bytes(first_key.public.read_bytes())
    return root
