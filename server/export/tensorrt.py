"""Engines for the export's own GPU, built by the shared builder (``edge_agent.runtime``).

Engines are tied to the GPU and TensorRT build that made them, so they are written under
``engines/<sm>-trt<version>/``, each with ``<engine>.layers.json`` (where its layers run). A DLA
step gives one engine per batch size. Without TensorRT, or without a GPU, each build reports why
it was skipped; nothing is faked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.runtime import (
    NOT_INSTALLED,
    EngineBuildError,
    EngineRecipe,
    generation,
    tensorrt_available,
    version_tag,
)
from server.export.recipe import engine_file


@dataclass(frozen=True)
class EngineBuild:
    """One engine: ``status`` is "built", "skipped: ..." or "failed: ..."."""

    precision: str
    status: str
    path: Path | None = None
    verified: bool = False
    profile: str | None = None
    """``dla<core>-b<batch>`` for a DLA engine."""
    layers: Path | None = None
    """``<engine>.layers.json``: how many layers run on the DLA and the GPU."""
    warning: str | None = None
    """The layer placement's warning: a DLA engine whose layers fell back to the GPU."""

    def as_dict(self) -> dict[str, Any]:
        """Plain mapping for JSON."""
        return {
            "precision": self.precision,
            "status": self.status,
            "path": str(self.path) if self.path else None,
            "verified": self.verified,
            "profile": self.profile,
            "layers": str(self.layers) if self.layers else None,
            "warning": self.warning,
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


def build_engines(export_dir: Path, recipe: EngineRecipe, trt: Any = None) -> list[EngineBuild]:
    """Build each engine the recipe lists for this TensorRT; report skips and failures.

    ``trt``: the ``tensorrt`` module (default: imported when installed and a GPU exists).
    """
    precisions = sorted({s.precision for s in recipe.steps})
    if trt is None:
        if not tensorrt_available():
            return [EngineBuild(p, NOT_INSTALLED) for p in precisions]
        sm = _gpu_sm()
        if sm is None:
            return [EngineBuild(p, "skipped: no CUDA GPU") for p in precisions]
        import tensorrt

        trt = tensorrt
    else:
        sm = _gpu_sm() or "gpu"
    try:
        gen = generation(trt.__version__)
    except EngineBuildError as e:
        return [EngineBuild(p, f"failed: {e}") for p in precisions]
    out = export_dir / "engines" / f"{sm}-trt{version_tag(trt.__version__)}"
    timing_cache = export_dir / recipe.timing_cache
    builds = []
    for step in (s for s in recipe.steps if s.trt == gen):
        for spec in recipe.build_specs(step, export_dir, timing_cache):
            path = out / engine_file(step.precision, spec.profile)
            try:
                spec.ensure(trt, path)
            except (RuntimeError, OSError) as e:
                builds.append(EngineBuild(step.precision, f"failed: {e}", profile=spec.profile))
                continue
            layers = spec.layers_file(path)
            warning = json.loads(layers.read_text()).get("warning") if layers.is_file() else None
            builds.append(
                EngineBuild(step.precision, "built", path, False, spec.profile, layers, warning)
            )
    return builds
