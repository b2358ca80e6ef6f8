"""The user's app, started on the test's database: sync (TestClient) and async (httpx) clients.

Any FastAPI app: the container its sessions come from is bound to the test database before
the app starts. That is `app.state.container` where the layer is installed (`install()` and
`create_app()` choose it when the app is made), else the default container, which
`Depends(get_session)` uses on a plain app.
"""

import importlib
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from types import TracebackType
from typing import Any

try:
    import httpx2 as httpx
except ModuleNotFoundError as missing:  # a test-time dependency only, as trustme
    raise ModuleNotFoundError(
        "backend.testing's app fixtures need httpx2, which is not installed: "
        "pip install 'fastapi-sqlmodel-neon[testing]' (or add httpx2 to your test dependencies)"
    ) from missing
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from backend.db.container import Container
from backend.db.deps import default_container
from backend.testing.databases import TestDatabase


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


def container_of(app: FastAPI) -> Container:
    """The container `app`'s sessions come from."""
    installed: Container | None = getattr(app.state, "container", None)
    return installed if installed is not None else default_container()


@contextmanager
def bound(app: FastAPI, database: TestDatabase) -> Iterator[None]:
    """`app`'s container bound to `database` inside the block, let go after it."""
    container = container_of(app)
    database.bind(container)
    try:
        yield
    finally:
        database.unbind(container)


@contextmanager
def started(app: FastAPI, database: TestDatabase) -> Iterator[TestClient]:
    """A TestClient with the app started on `database`; stopped and let go at exit."""
    with bound(app, database), TestClient(app) as client:
        yield client


class AsyncAppClient:
    """`async with backend_async_client as client:` — the app started on the running event
    loop (its lifespan run there, its engines disposed there at exit), and an httpx
    AsyncClient that calls it in-process."""

    def __init__(self, app: FastAPI, database: TestDatabase) -> None:
        self.app = app
        self.database = database
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        stack = AsyncExitStack()
        try:
            stack.enter_context(bound(self.app, self.database))
            state = await stack.enter_async_context(self.app.router.lifespan_context(self.app))
            transport = httpx.ASGITransport(app=_with_state(self.app, state))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return client

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


def _with_state(app: ASGIApp, state: Mapping[str, Any] | None) -> ASGIApp:
    """The app, given the lifespan's state in each request as an ASGI server gives it."""
    if not state:
        return app

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return with_state
