"""The backend interface: a checked ``infer()`` over a private ``_run()``, and a registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from models import NUM_GRADES

INPUT_NAME = "images"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8dyn")


class BackendError(RuntimeError):
    """A backend could not be created or could not run; the message names the model and why."""


@dataclass(frozen=True)
class Outputs:
    """The model's two heads for N images: ``grade_logits`` (N x 5), ``gradable_logit`` (N x 1)."""

    grade_logits: np.ndarray
    gradable_logit: np.ndarray

    def __len__(self) -> int:
        return int(self.grade_logits.shape[0])

    def rows(self, start: int, stop: int) -> Outputs:
        """Rows ``start:stop`` (views, no copy)."""
        return Outputs(self.grade_logits[start:stop], self.gradable_logit[start:stop])

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"grade_logits": ..., "gradable_logit": ...}``, the ONNX output names."""
        return {"grade_logits": self.grade_logits, "gradable_logit": self.gradable_logit}


def _all_finite(x: np.ndarray) -> bool:
    # isfinite() on float32 is exact and cheaper than a float64 sum (which must widen every value)
    return bool(np.isfinite(x).all())


class Backend(ABC):
    """One loaded model. Subclasses implement ``_run``; callers use the checked ``infer``."""

    name: ClassVar[str] = ""

    def __init__(self, model_path: Path, precision: str, image_size: int) -> None:
        if precision not in PRECISIONS:
            raise BackendError(
                f"{model_path}: unknown precision {precision!r}; expected one of {PRECISIONS}"
            )
        self.model_path = Path(model_path)
        self._precision = precision
        self._image_size = image_size

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
        """Run normalised float32 images (N x 3 x S x S); checks inputs and outputs.

        ``check_finite=False`` skips the NaN/inf check, for callers that checked already.
        """
        s = self._image_size
        if not isinstance(images, np.ndarray) or images.dtype != np.float32:
            got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"images must be a float32 numpy array, got {got}")
        if images.ndim != 4 or images.shape[1:] != (3, s, s) or images.shape[0] < 1:
            raise ValueError(
                f"images must have shape (N, 3, {s}, {s}) with N >= 1, got {images.shape}"
            )
        limit = self.max_batch
        if limit is not None and images.shape[0] > limit:
            raise ValueError(f"batch {images.shape[0]} exceeds this engine's maximum {limit}")
        if check_finite and not _all_finite(images):
            raise ValueError("images contain NaN or infinite values")
        out = self._run(np.ascontiguousarray(images))
        n = images.shape[0]
        if out.grade_logits.shape != (n, NUM_GRADES) or out.gradable_logit.shape != (n, 1):
            raise BackendError(
                f"{self.model_path}: {self.name} returned grade_logits {out.grade_logits.shape} "
                f"and gradable_logit {out.gradable_logit.shape} for {n} images; expected "
                f"({n}, {NUM_GRADES}) and ({n}, 1): is this a Fovea model?"
            )
        return out

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
    name: str, model_path: Path, precision: str, *, image_size: int, **options: Any
) -> Backend:
    """Load ``model_path`` with the backend registered as ``name`` (options are its own)."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; registered: {', '.join(backend_names())}"
        ) from None
    return cls(Path(model_path), precision, image_size=image_size, **options)
