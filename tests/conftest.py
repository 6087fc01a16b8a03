"""Shared fixtures, and the hardware markers that skip themselves where hardware is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SIZE = 32
"""Image side for the tiny models and datasets of the tests."""


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _why_missing(marker: str) -> str | None:
    if marker == "gpu" and not _has_cuda():
        return "skipped: no CUDA GPU"
    if marker == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return "skipped: TensorRT not installed"
    if marker == "jetson" and not Path("/etc/nv_tegra_release").exists():
        return "skipped: not a Jetson device"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip gpu/tensorrt/jetson tests, with the reason, where that hardware is missing."""
    for item in items:
        for marker in ("gpu", "tensorrt", "jetson"):
            if marker in item.keywords:
                reason = _why_missing(marker)
                if reason:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset directory: 5 sites x 160 images at 32 px."""
    from server.training.data import synthesise

    out = tmp_path_factory.mktemp("data")
    synthesise(
        out,
        sites=["site-a", "site-b", "site-c", "site-d", "site-e"],
        per_site=160,
        size=SIZE,
        seed=0,
    )
    return out


@pytest.fixture(scope="session")
def tiny_teacher(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small teacher trained for one epoch on ``tiny_data``; returns its checkpoint JSON."""
    from server.distill import run
    from server.distill.config import parse_config

    out = tmp_path_factory.mktemp("teacher")
    cfg = parse_config(
        {
            "teacher": None,
            "student": {"name": "resnet", "config": {"width": 8, "depths": [1, 1, 1]}},
            "data": {"dir": str(tiny_data)},
            "train": {"epochs": 1, "batch_size": 32, "threads": 1},
            "monitor": {"enabled": False},
            "out": str(out),
            "bootstrap": 0,
        }
    )
    return run(cfg, name="teacher", log=lambda s: None).checkpoint


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tests are small: one intra-op thread keeps them predictable on 2 cores."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _tiny_distill_config(
    data: Path, teacher: Path | None, out: Path, **sections: dict[str, object]
) -> Any:
    """A distillation config for the tiny data: a 4-channel ResNet student, one thread.

    Each keyword replaces that top-level section (``train``, ``monitor``, ``search`` ...).
    """
    from server.distill.config import parse_config

    base: dict[str, object] = {
        "teacher": str(teacher) if teacher else None,
        "student": {"name": "resnet", "config": {"width": 4, "depths": [1, 1, 1]}},
        "data": {"dir": str(data)},
        "train": {"epochs": 2, "batch_size": 32, "threads": 1},
        "out": str(out),
        "bootstrap": 0,
    }
    return parse_config({**base, **sections})


@pytest.fixture(scope="session")
def distill_config() -> Any:
    """Factory of tiny distillation configs: ``distill_config(data, teacher, out, **sections)``."""
    return _tiny_distill_config


@pytest.fixture(scope="session")
def tiny_export(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete ``fovea export`` directory of a tiny 32 px model trained for one epoch.

    It holds model.{fp32,fp16,int8,int8dyn}.onnx, golden.npz, validation.npz, export.json,
    recipe.json, int8_ranges.json and calibration.cache, exactly as the export stage writes
    them (small settings: MinMax calibration, few images and timing runs). Treat it as
    read-only; copy it (``shutil.copytree``) before changing anything.
    """
    from server.export import ExportConfig, export

    run = tmp_path_factory.mktemp("edge-run")
    src = tiny_teacher.parent
    shutil.copy(src / "config.yaml", run / "config.yaml")
    shutil.copy(tiny_teacher, run / "student.json")
    shutil.copy(tiny_teacher.with_suffix(".safetensors"), run / "student.safetensors")
    config = ExportConfig.model_validate(
        {
            "calibration_size": 64,
            "min_calibration": 16,
            "calibration_methods": ["MinMax"],
            "golden_size": 4,
            "validation_size": 48,
            "heldout_limit": 64,
            "sensitivity_samples": 16,
            "max_excluded": 2,
            "latency_runs": 1,
            "throughput_batch": 4,
            "threads": 1,
        }
    )
    out = tmp_path_factory.mktemp("edge-export") / "export"
    return export(run, out, config).out


USER_NET = """
from torch import nn


def make(width: int = 8) -> nn.Module:
    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1), nn.BatchNorm2d(o), nn.ReLU())

    body = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 2 * width))
    return nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def not_a_module() -> int:
    return 3
"""
"""A user's own backbone factory (``make``), and a function that returns no module."""


@pytest.fixture
def user_package(tmp_path: Path) -> Iterator[Path]:
    """A package of the user's own on sys.path (``tinynets.make`` builds a small CNN); yields
    the folder that holds it."""
    root = tmp_path / "src"
    (root / "tinynets").mkdir(parents=True)
    (root / "tinynets" / "__init__.py").write_text(USER_NET)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("tinynets", None)


def _need(package: str) -> None:
    try:
        __import__(package)
    except Exception:  # beside the CPU torch wheel timm and torchvision fail with more than that
        if os.environ.get("FOVEA_REQUIRE_TIMM") == "1":
            pytest.fail(f"{package} cannot be imported in the venv of make test-timm")
        pytest.skip(
            f"{package} cannot be imported beside this torch; make test-timm runs this test"
        )


@pytest.fixture(scope="session")
def need() -> Callable[[str], None]:
    """``need("timm")`` skips the test where the package cannot be imported (timm and torchvision
    cannot beside the CPU torch wheel); ``make test-timm`` runs it in ``.venv-timm`` and fails
    there instead."""
    return _need


@pytest.fixture(scope="session")
def hf_vit_config() -> dict[str, Any]:
    """A tiny Hugging Face ViT config: 32 wide, 4 layers of 4 heads, 32 px in 8 px patches."""
    return {
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": SIZE,
        "patch_size": 8,
    }


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, driven by playwright); CI must have it (.ci/run installs
    it), elsewhere the test is skipped without it."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; CI must install chromium")
        pytest.skip(f"skipped: {CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()
