"""GET /health/db: can the app reach its database, over TLS, and how is the pool doing."""

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.container import Container
from backend.db.health import probe
from backend.db.url import redact

router = APIRouter(tags=["health"])


@router.get("/health/db", responses={503: {"description": "The database cannot be reached"}})
@inject
def database_health(engine: Engine = Depends(Provide[Container.engine])) -> JSONResponse:
    try:
        return JSONResponse(dict(probe(engine)))
    except SQLAlchemyError as exc:
        cause = exc.orig if hasattr(exc, "orig") and exc.orig is not None else exc
        # The driver's own words, first line, without SQLAlchemy's link, without the password.
        message = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
        return JSONResponse(
            {"status": "unavailable", "error": redact(message, engine.url)}, status_code=503
        )
