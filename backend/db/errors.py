"""Which database errors mean "unavailable", and how to say so without a secret."""

import ssl
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from backend.db.url import redact

# What a database says while it cannot take a connection for now: refused (restarting), Neon's
# proxy waking or restarting a compute, a server starting or stopping, a connection cut.
TRANSIENT_CONNECT_ERRORS = (
    "connection refused",
    "could not connect to server",
    "couldn't connect to compute node",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "connection reset",
    "connection was closed",
    "terminating connection",
)


def is_transient_connect_error(exc: BaseException) -> bool:
    """Worth another connect: not a wrong password, a missing database, a bad certificate."""
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, ConnectionError):  # refused, reset, aborted: asyncpg raises them as such
        return True
    message = str(exc).lower()
    return any(words in message for words in TRANSIENT_CONNECT_ERRORS)


# SQLSTATEs of an outage rather than of a request: connection exceptions (class 08), too many
# connections (class 53), and the server shutting down, crashed, or not yet taking connections.
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot serve this request now; a retry later may succeed (HTTP 503)."""
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    # asyncpg's errors reach SQLAlchemy as one generic class; their SQLSTATE tells them apart.
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return exc.connection_invalidated or str(sqlstate).startswith(UNAVAILABLE_SQLSTATE_PREFIXES)


def as_connect_error(exc: Exception, dbapi: Any) -> Exception:
    """What a connect that failed for good raises: the same on both paths.

    psycopg2 raises OperationalError for whatever the server answers a connect with (unknown
    database, wrong password, too many connections), so the sync path calls each unavailable.
    asyncpg's server errors reach SQLAlchemy as the dialect's generic Error instead, which by
    SQLSTATE alone would make the same failure a 500 there (3D000, 28P01): it becomes the
    dialect's OperationalError too, with asyncpg's error, and so its SQLSTATE, kept.
    """
    operational: type[Exception] = dbapi.OperationalError
    from_driver: bool = isinstance(exc, dbapi.Error)
    if not from_driver:
        # asyncpg raises OSError (refused, reset) as it is; as the DBAPI's error, SQLAlchemy
        # wraps it like any other failed connect (OperationalError).
        return operational(str(exc))
    if getattr(exc, "sqlstate", None) and not isinstance(exc, operational):
        return operational(str(exc), getattr(exc, "orig", None))
    return exc


def no_answer(seconds: float) -> str:
    """Both paths' words for a statement timeout (DATABASE_STATEMENT_TIMEOUT)."""
    return f"no answer from the server within {seconds:g} s (the statement timeout)"


def describe(exc: BaseException, *urls: URL) -> str:
    """The driver's own first line, without SQLAlchemy's link and without any URL's password."""
    if isinstance(exc, PoolTimeoutError):
        # SQLAlchemy's words name the pool's size, overflow and timeout.
        message = f"connection pool exhausted: {str(exc).split(' (Background')[0]}"
    else:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        lines = str(cause).strip().splitlines() or [""]
        message = f"{type(cause).__name__}: {lines[0].split(' (Background')[0]}"
    for url in urls:
        message = redact(message, url)
    return message


def unavailable_errors() -> tuple[type[SQLAlchemyError], ...]:
    """The exception types an app registers a handler for; is_unavailable() sorts them out."""
    return (PoolTimeoutError, DBAPIError)
