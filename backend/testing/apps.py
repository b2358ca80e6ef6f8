"""The user's app, started on the test's database: sync (TestClient) and async (httpx) clients.

The app's container is bound to the test database as the app starts, before anything in it
is built: `create_app()`'s lifespan first makes its container the current one
(`backend.main.use_container`), and that is where the binding happens — for a container passed
to `create_app(container)` and for the default one alike, since an app made without one only
settles on its container there.
"""

import importlib
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, contextmanager
from types import TracebackType
from typing import Any

try:
    import httpx2 as httpx
except ModuleNotFoundError as missing:  # a test-time dependency only, as trustme
    raise ModuleNotFoundError(
        "backend.testing's app fixtures need httpx2, which is not installed: "
        "pip install 'backend[testing]' (or add httpx2 to your test dependencies)"
    ) from missing
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

import backend.main
from backend.container import Container
from backend.testing.databases import TestDatabase

# What create_app()'s lifespan calls first, with the container it settled on.
STARTUP_HOOK = "use_container"


class NotBoundError(RuntimeError):
    """The app started without binding its container: not an app of create_app()."""


def load_app(spec: str) -> FastAPI:
    """`package.module:attribute` (an app, or a function that makes one)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"backend_app = {spec!r}: expected package.module:app")
    found: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    app = found if isinstance(found, FastAPI) else found()
    if not isinstance(app, FastAPI):
        raise TypeError(f"backend_app = {spec!r} is {type(app).__name__}, not a FastAPI app")
    return app


@contextmanager
def bound_at_startup(
    app: FastAPI, database: TestDatabase, bound: list[Container]
) -> Iterator[None]:
    """While the app starts inside this block, its container is bound to `database` (and
    added to `bound`, for the caller to unbind)."""
    use_container = getattr(backend.main, STARTUP_HOOK)

    def use_and_bind(container: Container) -> None:
        use_container(container)
        database.bind(container)
        bound.append(container)

    setattr(backend.main, STARTUP_HOOK, use_and_bind)
    try:
        yield
    finally:
        setattr(backend.main, STARTUP_HOOK, use_container)
    if not bound or getattr(app.state, "container", None) is not bound[-1]:
        raise NotBoundError(
            "the app started without its container being pointed at the test database: "
            "backend_client and backend_async_client take an app made by "
            "backend.main.create_app()"
        )


@contextmanager
def started(app: FastAPI, database: TestDatabase) -> Iterator[TestClient]:
    """A TestClient with the app started on `database`; stopped and let go at exit."""
    bound: list[Container] = []
    with ExitStack() as stack:
        stack.callback(_unbind, database, bound)
        with bound_at_startup(app, database, bound):
            client = stack.enter_context(TestClient(app))
        yield client


def _unbind(database: TestDatabase, bound: list[Container]) -> None:
    for container in bound:
        database.unbind(container)
    bound.clear()


class AsyncAppClient:
    """`async with backend_async_client as client:` — the app started on the running event
    loop (its lifespan run there, its engines disposed there at exit), and an httpx
    AsyncClient that calls it in-process."""

    def __init__(self, app: FastAPI, database: TestDatabase) -> None:
        self.app = app
        self.database = database
        self._stack: AsyncExitStack | None = None
        self._bound: list[Container] = []

    async def __aenter__(self) -> httpx.AsyncClient:
        stack = AsyncExitStack()
        try:
            with bound_at_startup(self.app, self.database, self._bound):
                state = await stack.enter_async_context(self.app.router.lifespan_context(self.app))
            transport = httpx.ASGITransport(app=_with_state(self.app, state))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            _unbind(self.database, self._bound)
            raise
        self._stack = stack
        return client

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._stack is not None:
                await self._stack.aclose()
        finally:
            self._stack = None
            _unbind(self.database, self._bound)


def _with_state(app: ASGIApp, state: Mapping[str, Any] | None) -> ASGIApp:
    """The app, given the lifespan's state in each request as an ASGI server gives it."""
    if not state:
        return app

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return with_state
