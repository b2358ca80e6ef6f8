"""A database that cannot serve now answers 503 with a JSON reason, never a traceback or a hang."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.db.errors import describe, is_unavailable, unavailable_errors


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        raise exc  # a bug or a constraint, not an outage: FastAPI's own 500
    container = getattr(request.app.state, "container", None)
    urls = [container.settings().url] if container is not None else []
    return JSONResponse(
        {"status": "unavailable", "error": describe(exc, *urls)},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def handle_database_errors(app: FastAPI) -> None:
    for error in unavailable_errors():
        app.add_exception_handler(error, database_unavailable)
