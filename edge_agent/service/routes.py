"""The agent's routers besides screening: KServe v2 health and metadata, status and metrics, page.

Each takes the permission dependencies it needs (``Requirement``) from ``create_app``.
"""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from edge_agent import agent_version
from edge_agent.service.auth import Principal
from edge_agent.service.errors import ApiError
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.page import page_html
from edge_agent.service.predictor import Predictor
from models import DR_GRADING, TaskSpec

AGENT_NAME = "fovea-agent"
EXTENSIONS = ("binary_tensor_data", "model_configuration")

Requirement = Callable[[Request], Principal]
Readings = Callable[[], Mapping[str, Any]]


def kserve_router(predictor: Predictor, can_infer: Requirement) -> APIRouter:
    """KServe v2 health (open to all), server and model metadata, model readiness."""
    router = APIRouter()
    CanInfer = Annotated[Principal, Depends(can_infer)]
    info = predictor.info

    def check_model(name: str, version: str | None = None) -> None:
        if name != info.name or (version is not None and version != str(info.version)):
            raise ApiError(404, f"unknown model {name!r}; this agent serves {info.name!r}")

    @router.get("/v2/health/live", include_in_schema=False)
    async def live() -> dict[str, bool]:
        """The process answers."""
        return {"live": True}

    @router.get("/v2/health/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        """200 when the model can answer, 503 while it cannot."""
        readiness = getattr(predictor, "readiness", None)  # the served model says why not
        body = readiness() if readiness is not None else {"ready": predictor.ready()}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/v2")
    async def server_metadata(_: CanInfer) -> dict[str, Any]:
        """KServe server metadata."""
        return {"name": AGENT_NAME, "version": agent_version(), "extensions": list(EXTENSIONS)}

    @router.get("/v2/models/{name}")
    @router.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(_: CanInfer, name: str, version: str | None = None) -> dict[str, Any]:
        """KServe model metadata."""
        check_model(name, version)
        return info.metadata()

    @router.get("/v2/models/{name}/config")
    @router.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(_: CanInfer, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton-style model configuration."""
        check_model(name, version)
        return info.config()

    @router.get("/v2/models/{name}/ready")
    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(_: CanInfer, name: str, version: str | None = None) -> JSONResponse:
        """200 when the model can answer, 503 while it cannot."""
        check_model(name, version)
        ok = predictor.ready()
        return JSONResponse({"name": info.name, "ready": ok}, status_code=200 if ok else 503)

    return router


def status_router(
    predictor: Predictor,
    metrics: AgentMetrics,
    can_status: Requirement,
    *,
    telemetry: Readings | None = None,
    status_extra: Readings | None = None,
) -> APIRouter:
    """``GET /v1/status`` (model, extra fields, telemetry, uptime) and ``GET /metrics``."""
    router = APIRouter()
    CanStatus = Annotated[Principal, Depends(can_status)]
    info = predictor.info
    started = time.time()

    @router.get("/v1/status")
    async def status(user: CanStatus) -> dict[str, Any]:
        """Model, backend, precision and its measurements, telemetry, uptime."""
        body: dict[str, Any] = {
            "model": {
                "name": info.name,
                "version": info.version,
                "backend": info.backend,
                "precision": info.precision,
                "ready": predictor.ready(),
                **info.extra,
            },
            "uptime_s": round(time.time() - started, 3),
            "user": {"name": user.name, "role": user.role},
        }
        if status_extra is not None:
            body.update(status_extra())
        body["telemetry"] = (
            await asyncio.to_thread(telemetry) if telemetry is not None else {"available": False}
        )
        return body

    @router.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """The agent's metrics (and device telemetry) in Prometheus text format."""
        text = await asyncio.to_thread(metrics.render)  # telemetry may read sysfs
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def page_router(task: TaskSpec = DR_GRADING) -> APIRouter:
    """The web page at ``/`` (screening and review in the browser), in ``task``'s classes."""
    router = APIRouter()
    text = page_html(task)

    @router.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        """The screening and review page."""
        return HTMLResponse(text)

    return router


__all__ = [
    "AGENT_NAME",
    "EXTENSIONS",
    "Readings",
    "Requirement",
    "kserve_router",
    "page_router",
    "status_router",
]
