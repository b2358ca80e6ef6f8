"""A database that cannot serve now answers 503 with a JSON reason, never a traceback or a hang."""

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import URL

from backend.db.errors import describe, is_unavailable, unavailable_errors
from backend.settings import ConfigurationError


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        raise exc  # a bug or a constraint, not an outage: FastAPI's own 500
    return JSONResponse(
        {"status": "unavailable", "error": describe(exc, *engine_urls(request))},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def engine_urls(request: Request) -> Iterator[URL]:
    """The URLs whose passwords an error message must not show: the engines this app uses,
    which are test engines (and no settings at all) when a test overrides them."""
    container = getattr(request.app.state, "container", None)
    if container is None:
        return
    for engine in (container.engine, container.async_engine):
        try:
            yield engine().url
        except ConfigurationError:
            continue  # never configured, so never used


def handle_database_errors(app: FastAPI) -> None:
    for error in unavailable_errors():
        app.add_exception_handler(error, database_unavailable)
