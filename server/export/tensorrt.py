"""Engines for the export's own GPU, built by the shared builder (``edge_agent.runtime``).

Engines are tied to the GPU and TensorRT build that made them, so they are written under
``engines/<sm>-trt<version>/``. Without TensorRT, or without a GPU, each build reports why it
was skipped; nothing is faked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.runtime import (
    NOT_INSTALLED,
    EngineRecipe,
    build_engine,
    generation,
    tensorrt_available,
    version_tag,
)


@dataclass(frozen=True)
class EngineBuild:
    """One engine: ``status`` is "built", "skipped: ..." or "failed: ..."."""

    precision: str
    status: str
    path: Path | None = None
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON."""
        return {
            "precision": self.precision,
            "status": self.status,
            "path": str(self.path) if self.path else None,
            "verified": self.verified,
        }


def _gpu_sm() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm{major}{minor}"


def build_engines(export_dir: Path, recipe: EngineRecipe) -> list[EngineBuild]:
    """Build each precision the recipe lists for this TensorRT; report skips and failures."""
    precisions = sorted({s.precision for s in recipe.steps})
    if not tensorrt_available():
        return [EngineBuild(p, NOT_INSTALLED) for p in precisions]
    sm = _gpu_sm()
    if sm is None:
        return [EngineBuild(p, "skipped: no CUDA GPU") for p in precisions]
    import tensorrt as trt

    gen = generation(trt.__version__)
    out = export_dir / "engines" / f"{sm}-trt{version_tag(trt.__version__)}"
    out.mkdir(parents=True, exist_ok=True)
    timing_cache = export_dir / recipe.timing_cache
    builds = []
    for step in (s for s in recipe.steps if s.trt == gen):
        try:
            plan = build_engine(trt, recipe.build_spec(step, export_dir, timing_cache))
        except (RuntimeError, OSError) as e:
            builds.append(EngineBuild(step.precision, f"failed: {e}"))
            continue
        path = out / f"model.{step.precision}.plan"
        path.write_bytes(plan)
        builds.append(EngineBuild(step.precision, "built", path, verified=False))
    return builds
