"""GET /health/db: can the app reach its database, over TLS, and how is the pool doing."""

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.container import Container, ProvideOnLoop
from backend.db.errors import describe
from backend.db.health import probe

router = APIRouter(tags=["health"])


@router.get("/health/db", responses={503: {"description": "The database cannot be reached"}})
def database_health(engine: Engine = Depends(ProvideOnLoop[Container.engine])) -> JSONResponse:
    try:
        return JSONResponse(dict(probe(engine)))
    except SQLAlchemyError as exc:
        body = {"status": "unavailable", "error": describe(exc, engine.url)}
        return JSONResponse(body, status_code=503)
