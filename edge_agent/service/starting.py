"""The agent while it loads: listening already, live, not ready, saying what it is doing.

Loading can take minutes on a device (TensorRT engines built for the first time, the precision
choice measured, the inference worker started). ``serve`` runs :class:`StartingApp` under uvicorn
from the first second: ``/v2/health/live`` answers 200, ``/v2/health/ready`` 503 with
``{"state": "starting", "progress": ...}`` (a fleet rollout waits on that instead of failing),
everything else 503 with ``Retry-After``. Once loaded, the agent's app (and its lifespan) takes
over every request; when loading fails the server stops and ``serve`` raises the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

Log = Callable[[str], None]
Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class StartingApp:
    """ASGI app in front of the agent's app: serves readiness until ``load`` returns the app.

    ``load(log)`` runs in a thread and returns an object with ``.app`` (the FastAPI app, whose
    lifespan is entered here); ``stop()`` asks the server to exit when loading failed.
    ``app`` is the loaded app (None before): the connection protocol finds the agent through it.
    """

    def __init__(self, load: Callable[[Log], Any], stop: Callable[[], None], log: Log) -> None:
        self._load, self._stop, self._log = load, stop, log
        self.app: Any = None
        self.loaded: Any = None
        self.progress = "starting"
        self.error: BaseException | None = None

    def _note(self, text: str) -> None:
        self.progress = text
        self._log(text)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._answer(scope, send)

    async def _answer(self, scope: Scope, send: Send) -> None:
        path = scope.get("path", "")
        headers = [(b"content-type", b"application/json")]
        body: dict[str, object]
        if path == "/v2/health/live":
            status, body = 200, {"live": True}
        elif path == "/v2/health/ready":
            status, body = 503, {"ready": False, "state": "starting", "progress": self.progress}
        else:
            status, body = 503, {"error": f"the agent is starting: {self.progress}"}
            headers.append((b"retry-after", b"5"))
        data = json.dumps(body).encode()
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        await send({"type": "lifespan.startup.complete"})
        async with contextlib.AsyncExitStack() as stack:
            loading = asyncio.create_task(self._start(stack))
            await receive()  # lifespan.shutdown
            if not loading.done():
                self._note("stopping before the model finished loading")
            with contextlib.suppress(BaseException):
                await loading  # a load cannot be interrupted mid-way: let it finish
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        try:
            loaded = await asyncio.to_thread(self._load, self._note)
            await stack.enter_async_context(loaded.app.router.lifespan_context(loaded.app))
        except BaseException as exc:  # the server stops; serve() raises it
            self.error = exc
            self._note(f"failed to load: {exc}")
            self._stop()
            return
        self.loaded, self.app = loaded, loaded.app
