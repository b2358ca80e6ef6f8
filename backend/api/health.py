"""GET /health/db: can the app reach its database, over TLS, and how is the pool doing; and
each read replica (DATABASE_READ_URL): up, in recovery, how far behind."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.api.errors import answer
from backend.db.container import Container
from backend.db.deps import provide
from backend.db.engines.errors import Verdict, classify
from backend.db.engines.health import probe_async, probe_shared, prober
from backend.db.reads.replica_health import ReadReplicas

router = APIRouter(tags=["health"])


@router.get(
    "/health/db",
    responses={
        503: {"description": "The database cannot be reached, or is misconfigured"},
        504: {"description": "The database did not answer in time"},
    },
)
async def database_health(
    request: Request,
    engine: Engine | AsyncEngine = Depends(provide(Container.probed_engine)),
    replicas: ReadReplicas = Depends(provide(Container.read_replicas)),
) -> JSONResponse:
    # Async, with the sync probes on threads of their own: the route takes no worker from
    # FastAPI's threadpool, so health checks cannot keep the session routes waiting.
    try:
        if isinstance(engine, AsyncEngine):  # its connections belong to the event loop
            body: dict[str, Any] = dict(await probe_async(engine))
        else:
            body = dict(await probe_shared(engine))
    except SQLAlchemyError as exc:
        # Whatever stops the probe is the database's state, never the route's bug.
        verdict = classify(exc) or Verdict("unavailable", 503, True, None)
        return answer(request.app, exc, verdict)
    if replicas:
        # Each replica's own state (a replica down is not the primary down: 200 still), each
        # waited for briefly: a replica that does not answer is reported from what is known.
        body["replicas"] = await replicas.probe_bounded(prober())
    return JSONResponse(body)
