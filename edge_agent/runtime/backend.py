"""The backend interface: a checked ``infer()`` over a private ``_run()``, and a registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from models import DR_GRADING, OUTPUT_NAMES, TaskSpec

INPUT_NAME = "images"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8dyn")


class BackendError(RuntimeError):
    """A backend could not be created or could not run; the message names the model and why."""


class BackendUnavailable(BackendError):
    """The backend cannot run a batch for now (its worker is starting or restarting): a 503
    with ``Retry-After``, not a failure of the request."""

    retry_after_s = 1


class Outputs:
    """A model's named outputs for N images (batch first), in the task's order: the class
    logits, then the quality logit when the task has a quality head.

    ``Outputs(grade_logits, gradable_logit)`` (positional) names them as DR grading does;
    :meth:`named` takes any task's names.
    """

    __slots__ = ("_arrays",)

    def __init__(self, *arrays: np.ndarray, names: Sequence[str] = OUTPUT_NAMES) -> None:
        if len(arrays) != len(names) or not arrays:
            raise ValueError(f"{len(arrays)} output arrays for the {len(names)} names {names}")
        self._arrays: dict[str, np.ndarray] = dict(zip(names, arrays, strict=True))

    @classmethod
    def named(cls, arrays: Mapping[str, np.ndarray]) -> Outputs:
        """Outputs from ``{name: array}`` (in the model's order)."""
        return cls(*arrays.values(), names=tuple(arrays))

    @classmethod
    def concatenate(cls, parts: Sequence[Outputs]) -> Outputs:
        """The rows of ``parts`` one after another (every part has the same outputs)."""
        names = parts[0].names
        return cls(*(np.concatenate([p[n] for p in parts]) for n in names), names=names)

    @property
    def names(self) -> tuple[str, ...]:
        """The output names, in order."""
        return tuple(self._arrays)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the model has {list(self._arrays)}") from None

    def __len__(self) -> int:
        return int(next(iter(self._arrays.values())).shape[0])

    @property
    def grade_logits(self) -> np.ndarray:
        """DR grading's class output (``grade_logits``, N x 5)."""
        return self[OUTPUT_NAMES[0]]

    @property
    def gradable_logit(self) -> np.ndarray:
        """DR grading's quality output (``gradable_logit``, N x 1)."""
        return self[OUTPUT_NAMES[1]]

    def rows(self, start: int, stop: int) -> Outputs:
        """Rows ``start:stop`` (views, no copy)."""
        return Outputs(*(a[start:stop] for a in self._arrays.values()), names=self.names)

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{output name: array}``, the ONNX output names in order."""
        return dict(self._arrays)


def _all_finite(x: np.ndarray) -> bool:
    # isfinite() on float32 is exact and cheaper than a float64 sum (which must widen every value)
    return bool(np.isfinite(x).all())


class Backend(ABC):
    """One loaded model. Subclasses implement ``_run``; callers use the checked ``infer``."""

    name: ClassVar[str] = ""

    def __init__(
        self, model_path: Path, precision: str, image_size: int, task: TaskSpec = DR_GRADING
    ) -> None:
        if precision not in PRECISIONS:
            raise BackendError(
                f"{model_path}: unknown precision {precision!r}; expected one of {PRECISIONS}"
            )
        self.model_path = Path(model_path)
        self._precision = precision
        self._image_size = image_size
        self._task = task

    @property
    def task(self) -> TaskSpec:
        """The task the model answers: its input channels and output names and shapes."""
        return self._task

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs the task asks of the model, in order."""
        return tuple(self._task.output_shapes())

    @property
    def precision(self) -> str:
        """fp32, fp16, int8 or int8dyn."""
        return self._precision

    @property
    def image_size(self) -> int:
        """Square input side in pixels."""
        return self._image_size

    @property
    def providers(self) -> list[str]:
        """Where it runs (ONNX Runtime execution providers, or the GPU for TensorRT)."""
        return []

    @property
    def max_batch(self) -> int | None:
        """The largest batch one call accepts (None: no limit)."""
        return None

    @property
    def kind(self) -> str:
        """What runs the model ("onnxruntime", "tensorrt"), also when a worker hosts it."""
        return self.name

    @property
    def unavailable(self) -> str | None:
        """Why the backend cannot run a batch right now (e.g. its worker restarts), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Name, precision, providers and model file, for status pages and logs."""
        return {
            "backend": self.name,
            "precision": self.precision,
            "providers": self.providers,
            "model": str(self.model_path),
            "max_batch": self.max_batch,
        }

    def infer(self, images: np.ndarray, *, check_finite: bool = True) -> Outputs:
        """Run normalised float32 images (N x C x S x S, C the task's input channels); checks
        inputs, and that the outputs are the task's names and shapes.

        ``check_finite=False`` skips the NaN/inf check, for callers that checked already.
        """
        s, c = self._image_size, self._task.input.channels
        if not isinstance(images, np.ndarray) or images.dtype != np.float32:
            got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be a float32 numpy array, got {got}")
        if images.ndim != 4 or images.shape[1:] != (c, s, s) or images.shape[0] < 1:
            raise ValueError(
                f"images must have shape (N, {c}, {s}, {s}) with N >= 1 (task "
                f"{self._task.name}), got {images.shape}"
            )
        limit = self.max_batch
        if limit is not None and images.shape[0] > limit:
            raise ValueError(f"batch {images.shape[0]} exceeds this engine's maximum {limit}")
        if check_finite and not _all_finite(images):
            raise ValueError("images contain NaN or infinite values")
        out = self._run(np.ascontiguousarray(images))
        self._check_outputs(out, images.shape[0])
        return out

    def _check_outputs(self, out: Outputs, n: int) -> None:
        want = {name: (n, *shape) for name, shape in self._task.output_shapes().items()}
        got = {name: tuple(out[name].shape) for name in out.names}
        if any(got.get(name) != shape for name, shape in want.items()):
            expected = ", ".join(f"{k} {v}" for k, v in want.items())
            returned = ", ".join(f"{k} {v}" for k, v in got.items())
            raise BackendError(
                f"{self.model_path}: {self.name} returned {returned} for {n} images; task "
                f"{self._task.name} expects {expected}: is this a Fovea model of that task?"
            )

    @abstractmethod
    def _run(self, images: np.ndarray) -> Outputs:
        """Run a checked, contiguous batch."""

    def close(self) -> None:
        """Release the model's resources (sessions, engines, device memory)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


B = TypeVar("B", bound=type[Backend])
_REGISTRY: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator: make a backend available to :func:`create_backend` under ``name``."""

    def add(cls: B) -> B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"backend name {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def backend_names() -> list[str]:
    """Registered backend names."""
    return sorted(_REGISTRY)


def create_backend(
    name: str,
    model_path: Path,
    precision: str,
    *,
    image_size: int,
    task: TaskSpec = DR_GRADING,
    **options: Any,
) -> Backend:
    """Load ``model_path`` for ``task`` with the backend registered as ``name`` (options are
    its own)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; registered: {', '.join(backend_names())}"
        ) from None
    if task != DR_GRADING:  # backends written before task specs take no ``task`` (DR grading)
        options["task"] = task
    return cls(Path(model_path), precision, image_size=image_size, **options)
