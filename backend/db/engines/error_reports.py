"""How a database error is told: which server it came from, and its words without a secret.

The engines label the errors they raise with their host (SQLAlchemy's exception does not say
which engine raised it); the log line and the answer name it. What kind of failure an error is
(and so what the layer answers) is backend/db/engines/errors.py's.
"""

import contextlib

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Which server an error came from, for its log line: SQLAlchemy's exception does not say which
# engine raised it, and an app has a primary and maybe replicas. Engines label their errors.
_HOST = "backend_host"
# What psycopg 3 (psycopg/generators.py) puts before libpq's text for a failed connect.
PSYCOPG_CONNECT_FRAME = "connection failed: "


def label(exc: BaseException, host: str) -> None:
    # Inside SQLAlchemy's handle_error an exception raised here would replace the real one:
    # a driver's exception type without a __dict__ simply stays unlabelled.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _HOST, host)


def failed_host(exc: BaseException) -> str | None:
    """The host of the engine that raised `exc`, if one labelled it."""
    host = getattr(exc, _HOST, None)
    return host if isinstance(host, str) else None


def no_answer(seconds: float) -> str:
    """Both paths' words for a statement timeout (DATABASE_STATEMENT_TIMEOUT)."""
    return f"no answer from the server within {seconds:g} s (the statement timeout)"


def describe(exc: BaseException) -> str:
    """The driver's own first line, without SQLAlchemy's link.

    Nothing is searched and replaced: the password is hidden where it is structure, as a URL
    component (SQLAlchemy's URL rendering), and the drivers do not echo it. Replacing its text
    would mangle messages (a password `p` made "O***erationalError") and show where it is.
    """
    if isinstance(exc, PoolTimeoutError):
        # SQLAlchemy's words name the pool's size, overflow and timeout.
        return f"connection pool exhausted: {str(exc).split(' (Background')[0]}"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [""]
    # psycopg 3 puts "connection failed: " before libpq's own words, which psycopg2 gives bare:
    # one report for one failure, whichever driver met it.
    first = lines[0].removeprefix(PSYCOPG_CONNECT_FRAME)
    return f"{type(cause).__name__}: {first.split(' (Background')[0]}"
