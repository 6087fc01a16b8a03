"""The agent's FastAPI app, assembled from its routers: KServe v2, status and metrics, the web
page, screening and review; errors answered as JSON."""

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from edge_agent.service.auth import Action, Authenticator, TokenCache
from edge_agent.service.config import AgentConfig
from edge_agent.service.drift import DriftCollector, DriftWatch, drift_router
from edge_agent.service.errors import ApiError
from edge_agent.service.fastpath import (
    INFER_PATH,
    InferHandler,
    LimitMiddleware,
    ScreenHandler,
    infer_body_limit,
)
from edge_agent.service.guard import (
    SMALL_BODY,
    ConnectionLimits,
    Permission,
    RequestGate,
    RouteRule,
    route_rules,
)
from edge_agent.service.memory import MemoryBudget, default_budget
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
from edge_agent.service.sitepoint import SitePointWatch, site_point_router
from edge_agent.service.workpool import WorkPool


class AgentApp(FastAPI):
    """FastAPI with KServe ``infer`` answered before any of it (middleware, routing, telemetry).

    The hot path stays the outermost ASGI code uvicorn calls, so an infer request costs only
    its own handler; every other request goes through FastAPI as usual.
    """

    infer_handler: InferHandler | None = None
    screen_handler: ScreenHandler | None = None
    gate: RequestGate | None = None
    """Admission on the headers, for the connection protocol (edge_agent.service.protocol)."""

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
    drift: DriftWatch | None = None,
    site_point: SitePointWatch | None = None,
) -> AgentApp:
    """The agent's app over a loaded model, the account/case store and the screening rules.

    ``telemetry`` gives device readings (for /v1/status and /metrics); ``status_extra`` adds
    fields to /v1/status (precision-choice measurements, install history); pass ``metrics``
    to share the registry with the dynamic batcher's batch-size hook; ``drift`` watches each
    screening against the bundle's reference (``drift`` in /v1/status, /metrics, a reset route);
    ``site_point`` proposes the device's own threshold from its reviews (approved by an admin).
    """
    config = config or AgentConfig()
    metrics = metrics or AgentMetrics(telemetry)
    info = predictor.info
    metrics.set_model(info.name, info.version, info.backend, info.precision)
    tokens = TokenCache(users, ttl=config.token_cache_seconds)
    infer_limit = config.max_request_bytes or infer_body_limit(info)
    budget = MemoryBudget(
        (config.memory_budget_mb << 20) if config.memory_budget_mb else default_budget()
    )

    def require(action: Action) -> Requirement:
        return Permission(tokens, action)

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
    screener = Screening(predictor, cases, screening, config, metrics, memory=budget)
    if drift is not None:
        screener.drift = drift
        metrics.registry.register(DriftCollector(drift))
        status_extra = _with_drift(status_extra, drift)
    if site_point is not None:
        site_point.screener = screener
        status_extra = _with_site_point(status_extra, site_point)
    routers = (
        kserve_router(predictor, require("infer")),
        status_router(
            predictor, metrics, require("status"), telemetry=telemetry, status_extra=status_extra
        ),
        page_router(screening.task),
        screening_router(screener, require("screen"), require("review")),
        *([drift_router(drift, require("manage"))] if drift is not None else []),
        *(
            [site_point_router(site_point, require("status"), require("manage"))]
            if site_point is not None
            else []
        ),
    )
    for router in routers:
        app.include_router(router)
    parse_pool = WorkPool(config.parse_workers, config.parse_queue, name="parse")
    app.infer_handler = InferHandler(predictor, tokens, metrics, infer_limit, parse_pool)
    app.state.pools = (screener.pool, parse_pool)
    upload_limit = 2 * config.max_image_bytes + SMALL_BODY  # both eyes and the form around them
    app.screen_handler = ScreenHandler(screener, tokens, metrics, upload_limit)
    routes = [route for router in routers for route in router.routes]
    rules = route_rules(routes, {"infer": infer_limit, "screen": upload_limit})
    infer_path = re.compile(INFER_PATH.pattern + "$")
    rules.insert(0, RouteRule(infer_path, frozenset({"POST"}), "infer", infer_limit))
    app.gate = RequestGate(rules, tokens, connection_limits(config), budget)
    app.add_middleware(LimitMiddleware, max_bytes=max(infer_limit, upload_limit), metrics=metrics)
    return app


def _with_site_point(extra: Readings | None, site: SitePointWatch) -> Readings:
    """``extra``'s status fields and the site's threshold and proposals."""

    def fields() -> dict[str, object]:
        return {**(extra() if extra is not None else {}), **site.status()}

    return fields


def _with_drift(extra: Readings | None, drift: DriftWatch) -> Readings:
    """``extra``'s status fields and the ``drift`` section."""

    def fields() -> dict[str, object]:
        return {**(extra() if extra is not None else {}), "drift": drift.status()}

    return fields


def connection_limits(config: AgentConfig) -> ConnectionLimits:
    """The configuration's timeouts, and its connection limit (default: the open-file limit
    less 128 descriptors for the database, the model and the agent's own files)."""
    limit = config.max_connections
    if limit is None:
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):
            soft = 1024
        limit = max(16, (soft if soft != -1 else 65536) - 128)
    return ConnectionLimits(
        header_s=config.header_timeout_s,
        body_idle_s=config.body_timeout_s,
        request_s=config.request_timeout_s,
        max_connections=limit,
    )


__all__ = ["connection_limits", "create_app"]
