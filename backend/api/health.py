"""GET /health/db: can the app reach its database, over TLS, and how is the pool doing."""

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.container import Container
from backend.db.errors import describe
from backend.db.health import probe

router = APIRouter(tags=["health"])


@router.get("/health/db", responses={503: {"description": "The database cannot be reached"}})
@inject
def database_health(engine: Engine = Depends(Provide[Container.engine])) -> JSONResponse:
    try:
        return JSONResponse(dict(probe(engine)))
    except SQLAlchemyError as exc:
        body = {"status": "unavailable", "error": describe(exc, engine.url)}
        return JSONResponse(body, status_code=503)
