"""The ASGI middleware that gives each request its RequestScope (backend/db/sessions/scope.py).

`install(app)` adds it; an app may add it by hand (`app.add_middleware(RequestScopeMiddleware)`),
and then its routes' dependency-injector markers are moved to the event loop at its first
request, as install() does at startup (backend/wiring.py).
"""

from collections.abc import MutableMapping
from typing import Any
from weakref import WeakKeyDictionary

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.db.sessions.admission import admission_gate
from backend.db.sessions.scope import RequestScope
from backend.wiring import resolve_markers_on_the_loop


class RequestScopeMiddleware:
    """Opens a RequestScope around each HTTP request or WebSocket connection.

    A plain ASGI middleware, not BaseHTTPMiddleware: the app runs in this coroutine's own
    context, so the scope set here is the one every dependency, thread and task inherits.
    """

    def __init__(self, app: ASGIApp, container: Any = None) -> None:
        self.app = app
        # The app's container, chosen when the layer was installed; None: `app.state`'s.
        self.container = container
        self._converted: WeakKeyDictionary[Any, int] = WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        self._markers_on_the_loop(app)
        container = self.container or getattr(app.state, "container", None)
        async with RequestScope(admission_gate(), container) as request:
            if scope["type"] == "websocket":
                send = _leaving_when_accepted(request, send)
            await self.app(scope, receive, send)

    def _markers_on_the_loop(self, app: Any) -> None:
        # install() converts the routes' dependency-injector markers at startup; an app that
        # added this middleware by hand has them converted here, at its first request (and
        # again if routes were added since), so that `Depends(Provide[Container.session])`
        # is admitted there too rather than resolved unadmitted in the threadpool.
        routes = len(getattr(app, "routes", ()))
        if self._converted.get(app) == routes:
            return
        resolve_markers_on_the_loop(app)
        self._converted[app] = routes


def _leaving_when_accepted(request: RequestScope, send: Send) -> Send:
    """A WebSocket holds its admission only until it is accepted (or refused).

    Admission keeps the requests that may wait for a connection from holding every worker
    of FastAPI's threadpool while the requests holding connections need one to finish. A
    WebSocket uses the threadpool before it is accepted, for its sync dependencies; its
    handler then runs on the event loop, where a sync session neither holds a worker while
    it waits for a connection nor needs one to give it back. An open WebSocket holding its
    slot would only starve the HTTP requests (40 idle ones held every slot, for ever).
    """

    async def send_leaving(message: MutableMapping[str, Any]) -> None:
        if message["type"] in ("websocket.accept", "websocket.close") or message["type"].startswith(
            "websocket.http.response"
        ):
            request.leave()
        await send(message)

    return send_leaving
