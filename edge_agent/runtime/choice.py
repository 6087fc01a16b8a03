"""Precision choice for an installed bundle: measure it once, record it, open what it chose.

Install runs ``measure`` as its ``prepare`` step; ``serve`` opens the recorded choice with
``open_chosen`` (measuring first when nothing is recorded). Records live in the device's engine
cache directory, one per bundle digest (``selection_path``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_agent.bundle import Manifest, manifest_digest
from edge_agent.runtime.backend import Backend
from edge_agent.runtime.golden import GoldenResult, golden_check
from edge_agent.runtime.precision import (
    BundleInfo,
    SelectionSettings,
    choose_precision,
    open_candidate,
)
from edge_agent.runtime.worker_client import WorkerSettings

Log = Callable[[str], None]


class ChoiceConfig(Protocol):
    """The settings precision choice reads (``edge_agent.service.AgentConfig`` has them)."""

    @property
    def backend(self) -> str:
        """``auto``, ``onnxruntime`` or ``tensorrt``."""
        ...

    @property
    def precision(self) -> str:
        """``auto`` (the measured choice) or a precision to force."""
        ...

    @property
    def max_batch(self) -> int:
        """Rows per batch, the batch size measured."""
        ...

    @property
    def threads(self) -> int | None:
        """ONNX Runtime intra-op threads (None: its default)."""
        ...

    @property
    def worker_python(self) -> Path | None:
        """The Python that runs the inference worker (None: backends run in process)."""
        ...

    @property
    def worker_backends(self) -> tuple[str, ...]:
        """The backends the worker hosts."""
        ...


def bundle_info(manifest: Manifest, slot_dir: Path) -> BundleInfo:
    """What precision choice needs from an installed bundle's manifest."""
    budget = manifest.accuracy_budget_points
    return BundleInfo(
        preprocess=manifest.preprocess,
        files={name: entry.file for name, entry in manifest.precisions.items()},
        budget_points={"fp16": budget.fp16, "int8": budget.int8},
        digest=manifest_digest(slot_dir),
        recipe=manifest.engine_recipe,
        task=manifest.task,
        referral_threshold=manifest.thresholds.referral,
    )


def selection_path(engines: Path, digest: str) -> Path:
    """Where the precision-choice measurements of the bundle ``digest`` are recorded."""
    return engines / f"selection-{digest[:16]}.json"


def selection_settings(engines: Path, config: ChoiceConfig) -> SelectionSettings:
    """Precision-choice settings from the agent's configuration (engines cached in ``engines``)."""
    backends: tuple[str, ...] = (
        ("tensorrt", "onnxruntime") if config.backend == "auto" else (config.backend,)
    )
    python = getattr(config, "worker_python", None)  # settings made before the worker: none
    hosted = tuple(getattr(config, "worker_backends", ("tensorrt",)))
    return SelectionSettings(
        batch=config.max_batch,
        backends=backends,
        threads=config.threads or 0,
        cache_dir=engines,
        worker=WorkerSettings(str(python), hosted) if python else None,
    )


class ChecksFailed(ValueError):
    """The bundle's model fails, on this device, the checks install runs (golden outputs,
    accuracy budget): it must not serve."""


def measure(
    engines: Path,
    slot_dir: Path,
    manifest: Manifest,
    config: ChoiceConfig,
    log: Log = lambda s: None,
) -> dict[str, Any]:
    """Run the precision choice on ``slot_dir`` and record it; the measurements as JSON.

    Raises ChecksFailed (a ValueError) when no precision passed its golden and accuracy checks
    (install uses this as its ``prepare`` step, so such a bundle is refused).
    """
    info = bundle_info(manifest, slot_dir)
    engines.mkdir(parents=True, exist_ok=True)
    selection = choose_precision(
        slot_dir,
        info,
        selection_settings(engines, config),
        record=selection_path(engines, info.digest),
        log=log,
    )
    if selection.chosen is None:
        detail = "; ".join(f"{m.backend} {m.precision}: {m.status}" for m in selection.measurements)
        raise ChecksFailed(f"no precision of {manifest.name} v{manifest.version} passed: {detail}")
    return selection.as_dict()


def open_chosen(
    engines: Path,
    slot_dir: Path,
    manifest: Manifest,
    config: ChoiceConfig,
    log: Log = lambda s: None,
) -> tuple[Backend, dict[str, Any]]:
    """The backend to serve ``slot_dir`` with, and the precision-choice record behind it.

    A forced precision (``config.precision`` not ``auto``) is opened as told; otherwise the
    recorded candidates that passed, fastest first, each failing load falling back to the next.
    Raises ValueError when none can be loaded.
    """
    info = bundle_info(manifest, slot_dir)
    settings = selection_settings(engines, config)
    record_path = selection_path(engines, info.digest)
    record: dict[str, Any] = {}
    if record_path.is_file():
        record = json.loads(record_path.read_text())
    elif config.precision == "auto":
        log("no recorded precision choice for this bundle: measuring now")
        record = measure(engines, slot_dir, manifest, config, log)
    if config.precision != "auto":
        backend = "onnxruntime" if config.backend == "auto" else config.backend
        record = {**record, "forced": {"backend": backend, "precision": config.precision}}
        return open_candidate(backend, config.precision, slot_dir, info, settings, log), record
    failures: list[str] = []
    for m in _passed_fastest_first(record):
        try:
            opened = open_candidate(m["backend"], m["precision"], slot_dir, info, settings, log)
            return opened, {**record, "serving": {k: m.get(k) for k in _SERVING}}
        except Exception as exc:  # a build/load failure falls back to the next fastest
            failures.append(f"{m['backend']} {m['precision']}: {exc}")
            log(f"{m['backend']} {m['precision']} failed to load ({exc}); trying the next")
    raise ValueError(
        f"no precision of {manifest.name} v{manifest.version} could be loaded from {slot_dir}: "
        + ("; ".join(failures) or "none passed its checks (see " + str(record_path) + ")")
    )


def open_checked(
    engines: Path,
    slot_dir: Path,
    manifest: Manifest,
    config: ChoiceConfig,
    log: Log = lambda s: None,
) -> tuple[Backend, dict[str, Any], GoldenResult]:
    """:func:`open_chosen`, then the golden check install ran on it (``golden_check``): the
    backend, its precision-choice record and the check's result.

    Raises ChecksFailed (the backend closed) when the outputs differ from ``golden.npz`` or
    the check cannot run on it, or when measuring (no choice recorded) passes no precision;
    ValueError as ``open_chosen`` when nothing loads.
    """
    backend, record = open_chosen(engines, slot_dir, manifest, config, log)
    try:
        golden = golden_check(backend, slot_dir)
    except Exception as exc:  # unreadable golden.npz, a backend that fails on it: not verified
        backend.close()
        raise ChecksFailed(f"{slot_dir}: golden check could not run: {exc}") from exc
    if not golden.passed:
        backend.close()
        raise ChecksFailed(
            f"{slot_dir}: {backend.name} {backend.precision} does not reproduce golden.npz "
            f"({golden.describe()})"
        )
    return backend, record, golden


_SERVING = ("backend", "precision", "best_batch", "throughput_img_s")


def serving_batch(record: dict[str, Any], configured: int) -> int:
    """Rows per batch to serve with: ``configured``, or less when the precision choice found a
    smaller batch faster on this device (a record from before it measured batch sizes, or a
    forced precision, keeps ``configured``)."""
    best = (record.get("serving") or {}).get("best_batch")
    return min(configured, int(best)) if isinstance(best, int) and best >= 1 else configured


def _passed_fastest_first(record: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(
        (m for m in record.get("measurements", []) if m.get("status") == "passed"),
        key=lambda m: -(m.get("throughput_img_s") or 0.0),
    )


__all__ = [
    "ChecksFailed",
    "ChoiceConfig",
    "bundle_info",
    "measure",
    "open_checked",
    "open_chosen",
    "selection_path",
    "selection_settings",
    "serving_batch",
]
