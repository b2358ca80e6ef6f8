"""A database that cannot serve now answers 503 with a JSON reason, never a traceback or a hang."""

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import URL

from backend.db.errors import describe, is_unavailable, unavailable_errors


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        raise exc  # a bug or a constraint, not an outage: FastAPI's own 500
    return JSONResponse(
        {"status": "unavailable", "error": describe(exc, *engine_urls(request))},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def engine_urls(request: Request) -> Iterator[URL]:
    """The URLs whose passwords an error message must not show: every engine this app built,
    and the engines a test put in their place (building none to find out)."""
    container = getattr(request.app.state, "container", None)
    if container is None:
        return
    for engine in container.built_engines():
        yield engine.url
    for name in ("engine", "async_engine", "read_engine", "async_read_engine"):
        provider = getattr(container, name)
        if provider.overridden:
            yield provider().url


def handle_database_errors(app: FastAPI) -> None:
    for error in unavailable_errors():
        app.add_exception_handler(error, database_unavailable)
