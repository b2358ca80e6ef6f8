"""What kind of failure a database error is (outage, misconfiguration, timeout), by SQLSTATE
or, where the driver gives none, by the server's or libpq's primary message; and the setting
to fix when it is a refusal no retry will change.

Which server an error came from, and its words without a secret, are
backend/db/engines/error_reports.py's.
"""

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from backend.db.engines.error_reports import PSYCOPG_CONNECT_FRAME

# SQLSTATEs of an outage rather than of a request: connection exceptions (class 08), too many
# connections (class 53: the server's max_connections, or a role's or a database's connection
# limit; connections free up), and the server shutting down, crashed, or not yet taking
# connections.
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03")
# What libpq says when it cannot reach a server for now (psycopg2 and psycopg 3 give no
# SQLSTATE then):
# refused (restarting), Neon's proxy waking a compute, a connection cut.
TRANSIENT_CONNECT_ERRORS = (
    "connection refused",
    "could not connect to server",
    "server closed the connection unexpectedly",
    "connection reset",
    "connection was closed",
)
# Of the SQLSTATEs, the ones worth another connect within the connect budget: a server
# restarting or a connection cut. Another connect against a connection limit adds to the crowd.
RETRY_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03")
QUERY_CANCELED = "57014"  # statement_timeout, or a cancel

FIX_TLS = "the server takes TLS connections only: set DATABASE_SSLMODE=require (or verify-full)"
FIX_POOLER = (
    "a pooler (PgBouncer, Neon's -pooler host) refuses startup parameters: remove options "
    "from DATABASE_URL (or PGOPTIONS) or use the direct host, and set "
    "DATABASE_POOLER=pgbouncer if the host name does not end in -pooler"
)
FIX_AUTH = "the user name or password in DATABASE_URL is wrong (Neon: Roles in the console)"
FIX_DATABASE = "the database named in DATABASE_URL does not exist on that server"
FIX_PRIVILEGE = (
    "the user in DATABASE_URL may not connect to that database: GRANT CONNECT ON DATABASE "
    "to it, or use a role that may"
)
FIX_HOST = "the host in DATABASE_URL is not known (DNS): check its spelling and region"
FIX_CERTIFICATE = (
    "the server's certificate did not verify: check DATABASE_SSLROOTCERT (the CA that signed "
    "it) and that the host in DATABASE_URL is a name the certificate holds"
)

# Server messages are matched whole (anchored at both ends), and a name they hold (a role, a
# database) sits between quotes: a name cannot turn one answer into another.
_NAME = r'"[^"]*"'

# The server's primary messages for a refused connect, as libpq prints them: neither psycopg2
# nor psycopg 3 gives a SQLSTATE for a failed connect (libpq keeps none for it), so these stand
# for the SQLSTATE the server sent with them.
SERVER_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), sqlstate)
    for pattern, sqlstate in (
        (rf"password authentication failed for user {_NAME}", "28P01"),
        (r"no pg_hba\.conf entry for host .*", "28000"),
        (r"pg_hba\.conf rejects connection for host .*", "28000"),
        (rf"role {_NAME} does not exist", "28000"),
        (rf"role {_NAME} is not permitted to log in", "28000"),
        (rf"database {_NAME} does not exist", "3D000"),
        (rf"permission denied for database {_NAME}", "42501"),
        (rf"too many connections for (?:role|database) {_NAME}", "53300"),
        (r"sorry, too many clients already", "53300"),
        (r"remaining connection slots are reserved for .*", "53300"),
        (r"the database system is (?:starting up|in recovery mode|not yet accepting "
         r"connections|not accepting connections)", "57P03"),
        (r"the database system is shutting down", "57P03"),
        (r"terminating connection due to administrator command", "57P01"),
        # PgBouncer and Neon's proxy: 08P01, whatever the cause.
        (r"unsupported startup parameter.*", "08P01"),
        (r"ssl required", "08P01"),
        (r"connection is insecure \(try using `sslmode=require`\)", "08P01"),
        (r"couldn't connect to compute node.*", "08P01"),
    )
)  # fmt: skip

# libpq's own words for a connect that failed before the server could answer: the settings to
# fix. Anything else libpq says there (refused, reset, closed, timed out) is an outage.
CLIENT_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), fix)
    for pattern, fix in (
        (r"could not translate host name .*", FIX_HOST),
        # psycopg 3 resolves host names itself, before libpq (psycopg/_conninfo_attempts.py).
        (r"failed to resolve host .*", FIX_HOST),
        (r"(?:ssl error: )?certificate verify failed.*", FIX_CERTIFICATE),
        (rf"server certificate for {_NAME} (?:\(and \d+ other names?\) )?does not match host "
         rf"name {_NAME}", FIX_CERTIFICATE),
        (rf"root certificate file {_NAME} does not exist", FIX_CERTIFICATE),
        (r"server does not support ssl, but ssl was required", FIX_TLS),
    )
)  # fmt: skip

# The frame libpq puts around each attempt's answer ("connection to server at "h" (1.2.3.4),
# port 5432 failed: FATAL:  …"), and the lines that hold no primary message.
_LIBPQ_FRAME = re.compile(
    r'^connection to server (?:at "[^"]*"(?: \([^)]*\))?, port \d+|on socket "[^"]*") failed: '
)
_SEVERITY = re.compile(r"^(?:FATAL|ERROR|PANIC):  ")
_NOT_PRIMARY = ("DETAIL:  ", "HINT:  ", "CONTEXT:  ")
# psycopg 3 runs the attempts itself (one per host and address) and frames libpq's text again:
# "connection failed: <libpq's>", and with more than one attempt a summary line, then each
# attempt as "- host: 'h', port: '5432', hostaddr: '10.0.0.1': connection failed: <libpq's>"
# (psycopg/connection.py, `Connection.connect`). Left in, the frame hides the server's words
# and a wrong password would read as an outage, and be retried.
_PSYCOPG_ATTEMPT = re.compile(
    r"^- host: (?:'[^']*'|None), port: (?:'[^']*'|None), hostaddr: (?:'[^']*'|None): "
)
_PSYCOPG_FRAME = re.compile(rf"^{PSYCOPG_CONNECT_FRAME}")
_PSYCOPG_SUMMARY = "Multiple connection attempts failed. All failures were:"


@dataclass(frozen=True)
class Answer:
    """What the server (or the driver, when no server answered) said, for classifying."""

    sqlstate: str | None  # the server's, or the one its primary message stands for
    primary: str  # the server's primary message; "" when none is known
    client_fix: str | None = None  # a setting to fix, found before any server answered


def answer_of(exc: BaseException) -> Answer:
    """The SQLSTATE and primary message of a driver's error (or SQLAlchemy's wrapping of one).

    Never the DETAIL, nor any text outside the server's primary message: a client's own value
    in a constraint's DETAIL must not decide what kind of failure this is.
    """
    chain = _chain(exc)
    for error in chain:
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if not sqlstate:
            continue
        # SQLAlchemy's asyncpg adapter keeps asyncpg's error (with the primary message) under it.
        primaries = (_primary(e) for e in chain if getattr(e, "sqlstate", None) == sqlstate)
        return Answer(str(sqlstate), _primary(error) or next(filter(None, primaries), ""))
    for error in chain:
        if isinstance(error, ssl.SSLCertVerificationError):
            return Answer(None, "", FIX_CERTIFICATE)
        if isinstance(error, socket.gaierror):
            return Answer(None, "", FIX_HOST)
    for from_server, said in libpq_lines(chain[0]):
        for pattern, sqlstate in SERVER_MESSAGES if from_server else ():
            if pattern.fullmatch(said):
                return Answer(sqlstate, said)
        for pattern, fix in () if from_server else CLIENT_MESSAGES:
            if pattern.fullmatch(said):
                return Answer(None, said, fix)
    return Answer(None, "")


def libpq_lines(error: BaseException) -> Iterator[tuple[bool, str]]:
    """A libpq driver's failed connect (psycopg2, psycopg 3): libpq's text, one attempt per
    line, without the frames libpq and psycopg put around it.

    Each line is (from the server, its primary message): DETAIL and HINT lines are left out.
    """
    for line in str(error).splitlines():
        said = _PSYCOPG_FRAME.sub("", _PSYCOPG_ATTEMPT.sub("", line.strip()))
        said = _LIBPQ_FRAME.sub("", said)
        if not said or said.startswith(_NOT_PRIMARY) or said == _PSYCOPG_SUMMARY:
            continue
        server = _SEVERITY.match(said)
        yield bool(server), said[server.end() :] if server else said


def _chain(exc: BaseException) -> list[BaseException]:
    # The driver's error first (SQLAlchemy's .orig), then what it came from.
    start = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    seen: list[BaseException] = []
    todo: list[object] = [start]
    while todo:
        error = todo.pop(0)
        if isinstance(error, BaseException) and all(error is not s for s in seen):
            seen.append(error)
            todo += [getattr(error, "orig", None), error.__cause__]
    return seen


def _primary(error: BaseException) -> str:
    diag = getattr(error, "diag", None)  # psycopg2 and psycopg 3 alike
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary is None and type(error).__module__.startswith("asyncpg"):
        primary = getattr(error, "message", None)
    return primary.strip() if isinstance(primary, str) else ""


def refusal_fix(said: Answer) -> str | None:
    """The setting to fix, when the answer is a refusal no retry will change; else None.

    By SQLSTATE; the server's primary message only tells apart what one SQLSTATE covers:
    PostgreSQL answers a plaintext client with 28000, PgBouncer and Neon's proxy answer it and
    a startup parameter with 08P01.
    """
    if said.client_fix:
        return said.client_fix
    state, primary = said.sqlstate or "", said.primary.lower()
    if state == "28000" and primary.endswith(", no encryption"):
        return FIX_TLS
    if state.startswith("28"):  # invalid authorization: password, pg_hba.conf, role
        return FIX_AUTH
    if state == "3D000":
        return FIX_DATABASE
    if state == "42501" and primary.startswith("permission denied for database "):
        return FIX_PRIVILEGE  # a revoked CONNECT; a query's 42501 is the route's own error
    if state == "08P01":
        if primary.startswith("unsupported startup parameter"):
            return FIX_POOLER
        if primary in ("ssl required", "connection is insecure (try using `sslmode=require`)"):
            return FIX_TLS
    return None


def is_transient_connect_error(exc: BaseException) -> bool:
    """Worth another connect: not a wrong password, a missing database, a bad certificate."""
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, ConnectionError):  # refused, reset, aborted: asyncpg raises them as such
        return True
    said = answer_of(exc)
    if refusal_fix(said):
        return False
    if said.sqlstate:
        return said.sqlstate.startswith(RETRY_SQLSTATE_PREFIXES)
    lines = [said.lower() for _, said in libpq_lines(exc)]
    return any(words in line for line in lines for words in TRANSIENT_CONNECT_ERRORS)


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

    By SQLSTATE, the same on both paths and every driver for the same server answer (psycopg2
    and psycopg 3 give none for a failed connect: libpq's primary message line stands for it):

    - timeout (504, no Retry-After): the statement ran out of time (57014, or no answer within
      DATABASE_STATEMENT_TIMEOUT); re-running it every second would not help;
    - misconfigured (503, no Retry-After): authentication (28xxx), an unknown database
      (3D000), a revoked CONNECT privilege, an unknown host, a certificate that does not
      verify, plaintext to a server that takes TLS only, startup parameters sent to a pooler;
    - unavailable (503 with Retry-After): connection failures and resets (08xxx), too many
      connections (53xxx), a server starting or stopping, a full pool, a compute waking, no
      read replica to read from (DATABASE_READ_FALLBACK=fail).
    """
    if isinstance(exc, PoolTimeoutError | NoReadReplica):
        return Verdict("unavailable", 503, True, None)
    if not isinstance(exc, DBAPIError):
        return None
    said = answer_of(exc)
    sqlstate = said.sqlstate
    if sqlstate == QUERY_CANCELED or isinstance(exc.orig, TimeoutError) or _no_answer(exc):
        return Verdict("timeout", 504, False, sqlstate)
    fix = refusal_fix(said)
    if fix:
        return Verdict("misconfigured", 503, False, sqlstate, fix)
    if (
        isinstance(exc, OperationalError | InterfaceError)
        or exc.connection_invalidated
        or str(sqlstate).startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
    ):
        return Verdict("unavailable", 503, True, sqlstate)
    return None


def _no_answer(exc: DBAPIError) -> bool:
    return "(the statement timeout)" in str(exc.orig)


def database_errors() -> tuple[type[SQLAlchemyError], ...]:
    """The exception types an app registers a handler for; classify() sorts them out."""
    return (PoolTimeoutError, DBAPIError, NoReadReplica)
