"""Precision choice on the device: golden check, accuracy within budget, fastest wins, fallback."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime.backend import PRECISIONS, Backend, BackendError, create_backend
from edge_agent.runtime.golden import golden_check, infer_batched
from edge_agent.runtime.trt_engine import NOT_INSTALLED, tensorrt_available
from edge_agent.runtime.validation import accuracy_points, validation_sample
from edge_agent.runtime.worker_client import WorkerSettings
from models import DR_GRADING, PreprocessSpec, TaskSpec

SCHEMA_VERSION = 1
Log = Callable[[str], None]


@dataclass(frozen=True)
class BundleInfo:
    """What precision choice needs to know about a bundle (filled from the manifest).

    ``files`` maps precision to its ONNX file relative to the slot; ``budget_points`` holds the
    accuracy points each precision may lose against fp32 (``fp16``, ``int8``; ``int8dyn`` uses
    ``int8``, TensorRT fp32 uses ``fp16``'s since TF32 kernels are not bit-exact). ``task``
    names the outputs and the input channels; accuracy is measured by its metrics at
    ``referral_threshold``.
    """

    preprocess: PreprocessSpec
    files: Mapping[str, str]
    budget_points: Mapping[str, float]
    digest: str = ""
    recipe: Mapping[str, Any] | None = None
    task: TaskSpec = DR_GRADING
    referral_threshold: float = 0.5

    def __post_init__(self) -> None:
        unknown = set(self.files) - set(PRECISIONS)
        if unknown:
            raise ValueError(f"unknown precisions {sorted(unknown)}; expected some of {PRECISIONS}")
        if "fp32" not in self.files:
            raise ValueError("the bundle must carry fp32: it is the accuracy reference")
        for key in ("fp16", "int8"):
            if key not in self.budget_points or self.budget_points[key] < 0:
                raise ValueError(f"budget_points needs a non-negative {key!r} entry")

    def budget(self, precision: str) -> float:
        """Accuracy points ``precision`` may lose against the ONNX Runtime fp32 reference."""
        return float(self.budget_points["int8" if precision.startswith("int8") else "fp16"])

    @classmethod
    def from_export_dir(cls, directory: Path, digest: str = "") -> BundleInfo:
        """Read ``export.json`` and ``recipe.json`` of an export (or installed bundle) dir."""
        report = json.loads((Path(directory) / "export.json").read_text())
        recipe_path = Path(directory) / "recipe.json"
        point = report.get("operating_point") or {}
        return cls(
            preprocess=PreprocessSpec.model_validate(report["preprocess"]),
            files={k: v["file"] for k, v in report["precisions"].items()},
            budget_points={
                "fp16": report["budget"]["fp16_points"],
                "int8": report["budget"]["int8_points"],
            },
            digest=digest,
            recipe=json.loads(recipe_path.read_text()) if recipe_path.is_file() else None,
            task=TaskSpec.model_validate(report["task"]) if "task" in report else DR_GRADING,
            referral_threshold=float(point.get("referral_threshold", 0.5)),
        )


@dataclass(frozen=True)
class SelectionSettings:
    """How to measure: batch, timing runs, backends to try, threads, engine cache directory."""

    batch: int = 8
    runs: int = 20
    min_seconds: float = 0.3
    """Time each candidate for at least this long (and at least ``runs`` batches)."""
    backends: tuple[str, ...] = ("tensorrt", "onnxruntime")
    threads: int = 0
    cache_dir: Path | None = None
    worker: WorkerSettings | None = None
    """Where the inference worker runs, and the backends it hosts (None: all in process)."""

    def __post_init__(self) -> None:
        if self.batch < 1 or self.runs < 1 or self.min_seconds < 0 or self.threads < 0:
            raise ValueError(f"invalid selection settings: {self}")


@dataclass
class Measurement:
    """One candidate (backend x precision): status, golden error, accuracy, speed."""

    backend: str
    precision: str
    status: str = "pending"
    """"passed", "over budget", "golden check failed: ...", "failed: ...", "skipped: ..."."""
    accuracy: float | None = None
    accuracy_drop: float | None = None
    budget_points: float | None = None
    golden_max_abs_error: float | None = None
    throughput_img_s: float | None = None
    """The best of ``throughput_by_batch``: what ranks the candidates."""
    latency_ms_batch: float | None = None
    """Latency of one batch of ``best_batch``."""
    best_batch: int | None = None
    """The batch size with the highest throughput: the most the agent batches for it (large
    batches can be slower per image on a CPU, once activations outgrow its caches)."""
    throughput_by_batch: dict[int, float] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Built, reproduced golden.npz and stayed within the accuracy budget."""
        return self.status == "passed"


@dataclass(frozen=True)
class Selection:
    """Every measurement, the fastest passing candidate, and the order to fall back in."""

    measurements: list[Measurement]
    batch: int
    reference_accuracy: float | None
    device: dict[str, Any]
    measured_at: str

    def ranked(self) -> list[Measurement]:
        """Passing candidates, fastest first."""
        ok = [m for m in self.measurements if m.passed]
        return sorted(ok, key=lambda m: -(m.throughput_img_s or 0.0))

    @property
    def chosen(self) -> Measurement | None:
        """The fastest passing candidate (None when nothing passed)."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def as_dict(self) -> dict[str, Any]:
        """The JSON that ``/v1/status`` shows."""
        chosen = self.chosen
        return {
            "schema_version": SCHEMA_VERSION,
            "measured_at": self.measured_at,
            "batch": self.batch,
            "reference_accuracy": self.reference_accuracy,
            "device": self.device,
            "chosen": {"backend": chosen.backend, "precision": chosen.precision}
            if chosen
            else None,
            "measurements": [asdict(m) for m in self.measurements],
        }

    def write(self, path: Path) -> Path:
        """Save :meth:`as_dict` as JSON (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2))
        os.replace(tmp, path)
        return path


def open_candidate(
    backend: str,
    precision: str,
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings,
    log: Log = lambda s: None,
) -> Backend:
    """Load one candidate from the slot (TensorRT: from the engine cache, or built), in the
    inference worker when it hosts that backend."""
    size, task = info.preprocess.size, info.task
    if settings.worker is not None and backend in settings.worker.backends:
        from edge_agent.runtime.hosted import open_hosted

        return open_hosted(backend, precision, slot_dir, info, settings, log)
    if backend == "tensorrt":
        if info.recipe is None:
            raise BackendError("skipped: the bundle carries no engine recipe")
        if settings.cache_dir is None:
            raise BackendError("skipped: no engine cache directory configured")
        return create_backend(
            "tensorrt",
            slot_dir,
            precision,
            image_size=size,
            task=task,
            recipe=dict(info.recipe),
            cache_dir=settings.cache_dir,
            bundle_digest=info.digest or "nodigest",
        )
    cache = (
        settings.cache_dir / f"ort-{(info.digest or 'nodigest')[:16]}-{precision}"
        if settings.cache_dir
        else None
    )
    return create_backend(
        backend,
        slot_dir / info.files[precision],
        precision,
        image_size=size,
        task=task,
        cache_dir=cache,
        threads=settings.threads,
    )


def _candidates(info: BundleInfo, settings: SelectionSettings) -> list[tuple[str, str]]:
    out = []
    for name in settings.backends:
        if name == "tensorrt":
            steps = (info.recipe or {}).get("steps", [])
            out += [("tensorrt", p) for p in dict.fromkeys(s["precision"] for s in steps)]
        else:
            out += [(name, p) for p in PRECISIONS if p in info.files]
    return out


def _time(backend: Backend, x: np.ndarray, settings: SelectionSettings) -> tuple[float, float]:
    backend.infer(x)  # warm-up: first runs allocate and pick kernels
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < settings.runs or time.perf_counter() - start < settings.min_seconds:
        t = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return len(x) / median, 1000.0 * median


def _measure(
    m: Measurement,
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings,
    data: tuple[np.ndarray, np.ndarray],
) -> float | None:
    """Fill ``m`` in place; returns the accuracy (None when it could not be measured)."""
    try:
        backend = open_candidate(m.backend, m.precision, slot_dir, info, settings)
    except BackendError as e:
        msg = str(e)
        m.status = msg if msg.startswith("skipped:") else f"failed: {msg}"
        return None
    except Exception as e:  # a backend library's own error must not abort the whole choice
        m.status = f"failed: {type(e).__name__}: {e}"
        return None
    try:
        with backend:
            return _measure_open(m, backend, slot_dir, info, settings, data)
    except Exception as e:  # likewise while running: this candidate fails, the others go on
        m.status = f"failed: {type(e).__name__}: {e}"
        return None


def _measure_open(
    m: Measurement,
    backend: Backend,
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings,
    data: tuple[np.ndarray, np.ndarray],
) -> float | None:
    """Golden check, accuracy and speed of an opened candidate (fills ``m``)."""
    m.providers = backend.providers
    golden = golden_check(backend, slot_dir)
    m.golden_max_abs_error = golden.max_abs_error
    if not golden.passed:
        m.status = f"golden check failed: {golden.describe()}"
        return None
    x, labels = data
    out = infer_batched(backend, x, settings.batch)
    m.accuracy = accuracy_points(info, out[info.task.outputs.classes], labels)
    reps = -(-settings.batch // len(x))
    batch_x = np.ascontiguousarray(np.concatenate([x] * reps)[: settings.batch])
    latency = {}
    for size in batch_sizes(settings.batch):
        throughput, latency[size] = _time(backend, batch_x[:size], settings)
        m.throughput_by_batch[size] = round(throughput, 1)
    m.best_batch = max(m.throughput_by_batch, key=lambda b: (m.throughput_by_batch[b], -b))
    m.throughput_img_s = m.throughput_by_batch[m.best_batch]
    m.latency_ms_batch = latency[m.best_batch]
    return m.accuracy


def batch_sizes(largest: int) -> list[int]:
    """The batch sizes a candidate is timed at: powers of two below ``largest``, and it."""
    return sorted({*(1 << k for k in range(largest.bit_length()) if 1 << k < largest), largest})


def _tensorrt_skip(settings: SelectionSettings) -> str | None:
    """Why TensorRT cannot be measured here ("skipped: ..."), or None."""
    if settings.worker is not None and "tensorrt" in settings.worker.backends:
        from edge_agent.runtime.hosted import tensorrt_skip

        return tensorrt_skip(settings.worker)
    return None if tensorrt_available() else NOT_INSTALLED


def _device() -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "tensorrt": "installed" if tensorrt_available() else NOT_INSTALLED,
    }


def choose_precision(
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings | None = None,
    *,
    record: Path | None = None,
    log: Log = lambda s: None,
) -> Selection:
    """Measure every candidate the bundle carries on this device and rank those that pass.

    ONNX Runtime fp32 is the accuracy reference; a candidate passes when it loads (TensorRT:
    builds), reproduces ``golden.npz`` and loses at most its budget on ``validation.npz``.
    ``record``: where to write the measurements as JSON (e.g. ``root/engines/selection.json``).
    """
    settings = settings or SelectionSettings()
    slot_dir = Path(slot_dir)
    data = validation_sample(slot_dir, info)
    measurements = [Measurement(b, p) for b, p in _candidates(info, settings)]
    skip = _tensorrt_skip(settings) if "tensorrt" in settings.backends else None
    for m in measurements:
        if m.backend == "tensorrt" and skip is not None:
            m.status = skip
    reference = None
    if "onnxruntime" not in settings.backends:
        ref = Measurement("onnxruntime", "fp32")
        reference = _measure(ref, slot_dir, info, settings, data)
    for m in sorted(
        measurements, key=lambda m: (m.backend != "onnxruntime", m.precision != "fp32")
    ):
        if m.status != "pending":
            continue
        log(f"measuring {m.backend} {m.precision}")
        acc = _measure(m, slot_dir, info, settings, data)
        if m.backend == "onnxruntime" and m.precision == "fp32":
            reference = acc
        if acc is None:
            continue
        if reference is None:
            m.status = "failed: no fp32 reference accuracy (ONNX Runtime fp32 did not load)"
            continue
        m.budget_points = (
            info.budget(m.precision)
            if m.precision != "fp32" or (m.backend != "onnxruntime")
            else 0.0
        )
        m.accuracy_drop = reference - acc
        m.status = "passed" if m.accuracy_drop <= m.budget_points + 1e-9 else "over budget"
    selection = Selection(
        measurements=measurements,
        batch=settings.batch,
        reference_accuracy=reference,
        device=_device(),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if record is not None:
        selection.write(record)
    return selection


def open_selected(
    selection: Selection,
    slot_dir: Path,
    info: BundleInfo,
    settings: SelectionSettings | None = None,
    *,
    log: Log = lambda s: None,
) -> tuple[Backend, Measurement]:
    """Load the fastest passing candidate; when it fails to load, the next fastest, and so on."""
    settings = settings or SelectionSettings()
    failures = []
    for m in selection.ranked():
        try:
            return open_candidate(m.backend, m.precision, Path(slot_dir), info, settings, log), m
        except BackendError as e:
            failures.append(f"{m.backend} {m.precision}: {e}")
            log(f"{m.backend} {m.precision} failed to load ({e}); trying the next fastest")
    detail = "; ".join(failures) or "no candidate passed its golden and accuracy checks"
    raise BackendError(f"no precision of {slot_dir} could be loaded: {detail}")
