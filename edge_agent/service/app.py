"""The agent's FastAPI app: KServe v2, screening, review, status, metrics and the web page."""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from edge_agent import agent_version
from edge_agent.service.auth import Action, Authenticator, Principal, TokenCache, authorize
from edge_agent.service.config import AgentConfig
from edge_agent.service.errors import ApiError
from edge_agent.service.fastpath import INFER_PATH, InferHandler, LimitMiddleware
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.page import PAGE_HTML
from edge_agent.service.predictor import Predictor
from edge_agent.service.screen import CaseStore, ScreeningSettings, screening_router

AGENT_NAME = "fovea-agent"
EXTENSIONS = ("binary_tensor_data", "model_configuration")


class AgentApp(FastAPI):
    """FastAPI with KServe ``infer`` answered before any of it (middleware, routing, telemetry).

    The hot path stays the outermost ASGI code uvicorn calls, so an infer request costs only
    its own handler; every other request goes through FastAPI as usual.
    """

    infer_handler: InferHandler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        handler = self.infer_handler
        if handler is not None and scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.fullmatch(scope["path"])
            if match is not None:
                await handler(scope, receive, send, match)
                return
        await super().__call__(scope, receive, send)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return _error(400, f"invalid request: {where}: {first.get('msg')}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")


def create_app(
    predictor: Predictor,
    users: Authenticator,
    cases: CaseStore,
    screening: ScreeningSettings,
    config: AgentConfig | None = None,
    *,
    telemetry: Callable[[], Mapping[str, Any]] | None = None,
    status_extra: Callable[[], Mapping[str, Any]] | None = None,
    metrics: AgentMetrics | None = None,
) -> AgentApp:
    """The agent's app over a loaded model, the account/case store and the screening rules.

    ``telemetry`` gives device readings (for /v1/status and /metrics); ``status_extra`` adds
    fields to /v1/status (precision-choice measurements, install history); pass ``metrics``
    to share the registry with the dynamic batcher's batch-size hook.
    """
    config = config or AgentConfig()
    metrics = metrics or AgentMetrics(telemetry)
    info = predictor.info
    metrics.set_model(info.name, info.version, info.backend, info.precision)
    tokens = TokenCache(users, ttl=config.token_cache_seconds)
    started = time.time()

    app = AgentApp(
        title="Fovea edge agent",
        version=str(info.version),
        docs_url="/docs",
        # no OpenTelemetry hooks: nothing about requests leaves the device, and it costs time
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.tokens = tokens
    app.state.metrics = metrics
    _install_error_handlers(app)

    def require(action: Action) -> Callable[[Request], Principal]:
        def dependency(request: Request) -> Principal:
            return authorize(tokens, request.headers.get("authorization"), action)

        return dependency

    CanInfer = Annotated[Principal, Depends(require("infer"))]
    CanStatus = Annotated[Principal, Depends(require("status"))]

    def check_model(name: str, version: str | None = None) -> None:
        if name != info.name or (version is not None and version != str(info.version)):
            raise ApiError(404, f"unknown model {name!r}; this agent serves {info.name!r}")

    @app.get("/v2/health/live", include_in_schema=False)
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        ok = predictor.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata(_: CanInfer) -> dict[str, Any]:
        """KServe server metadata."""
        return {"name": AGENT_NAME, "version": agent_version(), "extensions": list(EXTENSIONS)}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(_: CanInfer, name: str, version: str | None = None) -> dict[str, Any]:
        """KServe model metadata."""
        check_model(name, version)
        return info.metadata()

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(_: CanInfer, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton-style model configuration."""
        check_model(name, version)
        return info.config()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(_: CanInfer, name: str, version: str | None = None) -> JSONResponse:
        """200 when the model can answer, 503 while it cannot."""
        check_model(name, version)
        ok = predictor.ready()
        return JSONResponse({"name": info.name, "ready": ok}, status_code=200 if ok else 503)

    @app.get("/v1/status")
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

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        text = await asyncio.to_thread(metrics.render)  # telemetry may read sysfs
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    app.include_router(
        screening_router(
            predictor, cases, screening, config, metrics, require("screen"), require("review")
        )
    )
    app.infer_handler = InferHandler(predictor, tokens, metrics, config.max_request_bytes)
    app.add_middleware(LimitMiddleware, max_bytes=config.max_request_bytes, metrics=metrics)
    return app


__all__ = ["create_app"]
