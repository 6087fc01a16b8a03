"""``fovea fleet serve``: a read-only web page of the fleet for admins, with its own accounts.

Every page needs an account of the page (``PageAccounts``), sent as ``Authorization: Bearer``
or exchanged once through the sign-in form (``POST /login``) for a session cookie (HttpOnly,
SameSite=Strict, Secure under TLS); without one the answer is a 401 with the sign-in form.
Device tokens are never accepted here, and never shown.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from deploy.fleet.accounts import PageAccounts
from deploy.fleet.inventory import Inventory, InventoryError
from deploy.fleet.overview import FederationSource, gather
from deploy.fleet.pages import CSS, login_page, overview_page, problem_page

COOKIE = "fovea_fleet_session"
_MAX_FORM = 4096
_MAX_SESSIONS = 1000
_CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class PageConfig:
    """Where the page reads from and how it listens."""

    inventory: Path
    accounts: Path
    federation_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8700
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_ttl_s: float = 8 * 3600.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key for TLS, or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path} does not exist (TLS certificate or key)")
        if not Path(self.inventory).is_file():
            raise ValueError(f"no fleet inventory at {self.inventory}: add devices first")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not in 1-65535")
        if self.session_ttl_s <= 0:
            raise ValueError(f"session_ttl_s must be > 0, got {self.session_ttl_s}")

    @property
    def tls(self) -> bool:
        """Whether the page is served over HTTPS."""
        return self.tls_cert is not None


class _Sessions:
    """Signed-in browsers: a random session id -> (account, expiry), kept in memory."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[str, float]] = {}

    def new(self, account: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._by_id) >= _MAX_SESSIONS:
                self._by_id = {k: v for k, v in self._by_id.items() if v[1] > now}
                while len(self._by_id) >= _MAX_SESSIONS:
                    self._by_id.pop(next(iter(self._by_id)))
            self._by_id[sid] = (account, now + self._ttl)
        return sid

    def account(self, sid: str) -> str | None:
        with self._lock:
            found = self._by_id.get(sid)
            if found is not None and found[1] <= time.monotonic():
                del self._by_id[sid]
                found = None
        return None if found is None else found[0]

    def drop(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)


def _headers(response: Response, tls: bool) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    if tls:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def _refused(message: str | None = None) -> HTMLResponse:
    return HTMLResponse(
        login_page(message), status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def fleet_page(config: PageConfig, federation: FederationSource | None = None) -> FastAPI:
    """The page's ASGI app; ``federation`` reads the federation runs (None: none given).
    Raises ValueError (or OSError) when the inventory or the accounts file cannot be opened."""
    app = FastAPI(title="Fovea fleet", docs_url=None, redoc_url=None, openapi_url=None)
    accounts = PageAccounts(config.accounts)
    inventory = Inventory(config.inventory)  # opened (and its schema checked) once
    sessions = _Sessions(config.session_ttl_s)

    def signed_in(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            return accounts.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        account = sessions.account(request.cookies.get(COOKIE, ""))
        return account if account is not None and accounts.exists(account) else None

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Every answer: CSP (same origin, no script), no framing, no caching."""
        return _headers(await call_next(request), config.tls)

    @app.get("/fleet.css", include_in_schema=False)
    def stylesheet() -> Response:
        """The page's style sheet (no account needed: it holds nothing)."""
        return Response(CSS, media_type="text/css")

    @app.get("/", include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        """The fleet page (401 and the sign-in form without an account)."""
        account = signed_in(request)
        if account is None:
            return _refused()
        try:
            view = gather(inventory, federation, config.federation_dir)
        except (InventoryError, sqlite3.Error, OSError) as exc:
            text = f"the fleet inventory {config.inventory} cannot be read: {exc}"
            return HTMLResponse(problem_page(text), status_code=503)
        return HTMLResponse(overview_page(view, account))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Exchange a page token (form field ``token``) for a session cookie."""
        body = await request.body()
        if len(body) > _MAX_FORM:
            return _refused("the sign-in form was too large")
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        account = await run_in_threadpool(accounts.authenticate, token)
        if account is None:
            return _refused("that token is not a fleet page account's token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE, sessions.new(account), max_age=int(config.session_ttl_s), path="/",
            httponly=True, samesite="strict", secure=config.tls,
        )  # fmt: skip
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        """Forget this browser's session."""
        sessions.drop(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return app


def serve_page(config: PageConfig, app: FastAPI) -> None:
    """Serve ``app`` (``fleet_page``) with uvicorn as ``config`` says until interrupted (HTTPS
    when a certificate is given)."""
    import uvicorn

    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        log_level="info",
    )


__all__ = ["COOKIE", "PageConfig", "fleet_page", "serve_page"]
