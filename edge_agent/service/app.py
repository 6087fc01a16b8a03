"""The agent's FastAPI app, assembled from its routers: KServe v2, status and metrics, the web
page, screening and review; errors answered as JSON."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from edge_agent.service.auth import Action, Authenticator, Principal, TokenCache, authorize
from edge_agent.service.config import AgentConfig
from edge_agent.service.errors import ApiError
from edge_agent.service.fastpath import INFER_PATH, InferHandler, LimitMiddleware
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.predictor import Predictor
from edge_agent.service.routes import (
    Readings,
    Requirement,
    kserve_router,
    page_router,
    status_router,
)
from edge_agent.service.screen import CaseStore, Screening, ScreeningSettings, screening_router


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


def _error(status: int, message: str, extra: dict[str, str] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return JSONResponse(
        {"error": message}, status_code=status, headers={**headers, **(extra or {})}
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

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
    telemetry: Readings | None = None,
    status_extra: Readings | None = None,
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

    def require(action: Action) -> Requirement:
        def dependency(request: Request) -> Principal:
            return authorize(tokens, request.headers.get("authorization"), action)

        return dependency

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
    app.include_router(kserve_router(predictor, require("infer")))
    app.include_router(
        status_router(
            predictor, metrics, require("status"), telemetry=telemetry, status_extra=status_extra
        )
    )
    app.include_router(page_router(screening.task))
    screener = Screening(predictor, cases, screening, config, metrics)
    app.state.image_pool = screener.pool
    app.include_router(screening_router(screener, require("screen"), require("review")))
    app.infer_handler = InferHandler(predictor, tokens, metrics, config.max_request_bytes)
    app.add_middleware(LimitMiddleware, max_bytes=config.max_request_bytes, metrics=metrics)
    return app


__all__ = ["create_app"]
