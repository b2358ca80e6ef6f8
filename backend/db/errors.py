"""What kind of failure a database error is (outage, misconfiguration, timeout), and how to
say so without a secret."""

import contextlib
import ssl
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

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
QUERY_CANCELED = "57014"  # statement_timeout, or a cancel

# A permanent error dressed as a temporary one sends clients retrying for ever: these are
# settings to fix. psycopg2 gives no SQLSTATE for a failed connect, so libpq's words count
# too (the server's, in English as Neon sends them).
MISCONFIGURATIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "",  # by the words, whatever the SQLSTATE (28000 from PostgreSQL, 08P01 from proxies)
        ("no encryption", "connection is insecure", "ssl required"),
        "the server takes TLS connections only: set DATABASE_SSLMODE=require (or verify-full)",
    ),
    (
        "",  # PgBouncer's 08P01, which is no outage
        ("unsupported startup parameter",),
        "a pooler (PgBouncer, Neon's -pooler host) refuses startup parameters: remove options "
        "from DATABASE_URL (or PGOPTIONS) or use the direct host, and set "
        "DATABASE_POOLER=pgbouncer if the host name does not end in -pooler",
    ),
    (
        "28",  # invalid authorization: wrong password, no pg_hba.conf line, no such role
        ("password authentication failed", "no pg_hba.conf entry", 'role "', "28p01"),
        "the user name or password in DATABASE_URL is wrong (Neon: Roles in the console)",
    ),
    (
        "3D000",  # invalid catalog name
        ("does not exist",),
        "the database named in DATABASE_URL does not exist on that server",
    ),
    (
        "",  # not the server's answer: the name did not resolve
        ("could not translate host name", "name or service not known", "nodename nor servname"),
        "the host in DATABASE_URL is not known (DNS): check its spelling and region",
    ),
)


class NoReadReplica(SQLAlchemyError):
    """No read replica can take a read now, and DATABASE_READ_FALLBACK=fail."""


@dataclass(frozen=True)
class Verdict:
    """What kind of failure a database error is, and what the layer answers for it."""

    kind: Literal["unavailable", "misconfigured", "timeout"]
    status: int
    retry_after: bool  # a retry later may succeed
    sqlstate: str | None
    fix: str | None = None


def classify(exc: BaseException) -> Verdict | None:
    """The one place that sorts database errors; None: the route's own error (FastAPI's 500).

    - timeout (504, no Retry-After): the statement ran out of time (57014, or no answer within
      DATABASE_STATEMENT_TIMEOUT); re-running it every second would not help;
    - misconfigured (503, no Retry-After): authentication, an unknown database or host,
      plaintext to a server that takes TLS only, startup parameters sent to a pooler;
    - unavailable (503 with Retry-After): connection failures and resets, too many
      connections, a server starting or stopping, a full pool, a compute waking, no read
      replica to read from (DATABASE_READ_FALLBACK=fail).
    """
    if isinstance(exc, PoolTimeoutError | NoReadReplica):
        return Verdict("unavailable", 503, True, None)
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = _sqlstate(exc)
    if sqlstate == QUERY_CANCELED or isinstance(exc.orig, TimeoutError) or _no_answer(exc):
        return Verdict("timeout", 504, False, sqlstate)
    message = str(exc.orig).lower()
    for prefix, words, fix in MISCONFIGURATIONS:
        by_state = bool(prefix) and bool(sqlstate) and str(sqlstate).startswith(prefix)
        by_words = not (prefix and sqlstate) and any(word in message for word in words)
        if by_state or by_words:
            return Verdict("misconfigured", 503, False, sqlstate, fix)
    if (
        isinstance(exc, OperationalError | InterfaceError)
        or exc.connection_invalidated
        or str(sqlstate).startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
    ):
        return Verdict("unavailable", 503, True, sqlstate)
    return None


def _sqlstate(exc: DBAPIError) -> str | None:
    # asyncpg's errors carry .sqlstate, psycopg2's .pgcode (None for a failed connect).
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return str(state) if state else None


def _no_answer(exc: DBAPIError) -> bool:
    return "(the statement timeout)" in str(exc.orig)


# Which server an error came from, for its log line: SQLAlchemy's exception does not say which
# engine raised it, and an app has a primary and maybe replicas. Engines label their errors.
_HOST = "backend_host"


def label(exc: BaseException, host: str) -> None:
    # Inside SQLAlchemy's handle_error an exception raised here would replace the real one:
    # a driver's exception type without a __dict__ simply stays unlabelled.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _HOST, host)


def failed_host(exc: BaseException) -> str | None:
    """The host of the engine that raised `exc`, if one labelled it."""
    host = getattr(exc, _HOST, None)
    return host if isinstance(host, str) else None


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
    return f"{type(cause).__name__}: {lines[0].split(' (Background')[0]}"


def database_errors() -> tuple[type[SQLAlchemyError], ...]:
    """The exception types an app registers a handler for; classify() sorts them out."""
    return (PoolTimeoutError, DBAPIError, NoReadReplica)
