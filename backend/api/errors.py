"""Database errors the layer answers: 503 for an outage (with Retry-After) or a
misconfiguration (without), 504 for a statement that ran out of time; one log line each.

Everything else is the route's own error, FastAPI's 500, as without the layer.
"""

import logging
from collections import OrderedDict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backend.db.engines.error_reports import describe, failed_host
from backend.db.engines.errors import Verdict, classify, database_errors

logger = logging.getLogger("backend")

CAUSES_KEPT = 256  # misconfigurations remembered as already logged, most recent first


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    verdict = classify(exc)
    if verdict is None:
        raise exc  # a bug or a constraint, not the database's state: FastAPI's own 500
    return answer(request.app, exc, verdict)


def answer(app: FastAPI, exc: BaseException, verdict: Verdict) -> JSONResponse:
    """The JSON body, status and headers for a classified error, and its one log line."""
    message = describe(exc)
    host = failed_host(exc) or _write_host(app)
    if verdict.kind == "misconfigured":
        # Once per cause, not once per request: the fix does not change between requests.
        # The cause is the server's answer, not its words (they may hold a client's text), and
        # the causes kept are bounded whatever arrives.
        said: OrderedDict[tuple[str | None, str | None, str], None] = app.state.__dict__.setdefault(
            "backend_misconfigurations", OrderedDict()
        )
        cause = (verdict.sqlstate, verdict.fix, host)
        if cause in said:
            said.move_to_end(cause)
        else:
            said[cause] = None
            while len(said) > CAUSES_KEPT:
                said.popitem(last=False)
            logger.error(
                "database misconfigured: %s; SQLSTATE %s, host %s. Fix: %s",
                message, verdict.sqlstate or "-", host, verdict.fix,
            )  # fmt: skip
    else:
        logger.warning(
            "database %s: %s; SQLSTATE %s, host %s",
            verdict.kind, message, verdict.sqlstate or "-", host,
        )  # fmt: skip
    body = {"status": verdict.kind, "error": message}
    if verdict.fix:
        body["fix"] = verdict.fix
    headers = {"Retry-After": "1"} if verdict.retry_after else None
    return JSONResponse(body, status_code=verdict.status, headers=headers)


def _write_host(app: FastAPI) -> str:
    # For an error no engine labelled (backend.db.engines.build labels theirs): the write engine's.
    container = getattr(app.state, "container", None)
    engines = container.built_engines() if container is not None else []
    return str(engines[0].url.host) if engines else "-"


def handle_database_errors(app: FastAPI) -> None:
    for error in database_errors():
        app.add_exception_handler(error, database_error)
