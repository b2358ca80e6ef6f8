"""Pure rules on a database URL: driver scheme, TLS policy, Neon's pooler. No I/O."""

import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy.engine import URL

from backend.settings import ConfigurationError, DatabaseSettings

PLAINTEXT_SSLMODES = frozenset({"disable", "allow", "prefer"})


def is_local(url: URL) -> bool:
    """Loopback or a unix socket: the only places plaintext cannot cross a network."""
    host = url.host or url.query.get("host")
    if not host or str(host).startswith("/"):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def is_pooler(settings: DatabaseSettings) -> bool:
    """Neon's pooled endpoint is PgBouncer in transaction mode, named by `-pooler` on the ID."""
    if settings.pooler != "auto":
        return settings.pooler == "pgbouncer"
    return (settings.url.host or "").split(".")[0].endswith("-pooler")


def effective_sslmode(settings: DatabaseSettings) -> str:
    """The sslmode to connect with, refusing plaintext to a remote host unless allowed."""
    url = settings.url
    if settings.sslmode is None:
        # Local development servers seldom have a certificate; Neon always needs TLS.
        return "prefer" if is_local(url) else "require"
    if settings.sslmode in PLAINTEXT_SSLMODES and not is_local(url) and not settings.allow_insecure:
        raise ConfigurationError(
            f"sslmode={settings.sslmode} would allow plaintext to {url.host}, and Neon refuses "
            "connections without TLS: use DATABASE_SSLMODE=require (or verify-full), or set "
            "DATABASE_ALLOW_INSECURE=true if this host really is on a trusted network"
        )
    return settings.sslmode


def check_scheme(url: URL) -> None:
    backend = url.get_backend_name()
    if backend not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"DATABASE_URL must be a PostgreSQL URL (postgresql://…), got scheme {backend!r}"
        )


def psycopg2_url(settings: DatabaseSettings, libpq_version: int) -> URL:
    """The URL for the sync engine: psycopg2 over libpq, every libpq parameter in the query."""
    url = settings.url
    check_scheme(url)
    _refuse_startup_settings_on_pooler(settings)
    if url.query.get("sslrootcert") == "system" and libpq_version < 160000:
        raise ConfigurationError(
            f"sslrootcert=system needs libpq 16 or newer, and psycopg2 here uses libpq "
            f"{libpq_version // 10000}: give the CA bundle's path instead, e.g. "
            "sslrootcert=/etc/ssl/certs/ca-certificates.crt"
        )
    # SQLAlchemy refuses postgres:// since 1.4, and from 2.1 a bare postgresql:// means psycopg 3,
    # which is not installed; the sync path is psycopg2 on purpose (it never prepares
    # server-side, so it is safe behind the pooler). asyncpg's own parameters, meant for the
    # async twin, would be "invalid connection option"s to libpq.
    libpq_query = url.difference_update_query(set(ASYNCPG_PARAMETERS) - {"target_session_attrs"})
    return libpq_query.set(drivername="postgresql+psycopg2").update_query_dict(
        {
            "sslmode": effective_sslmode(settings),
            "connect_timeout": str(settings.connect_timeout),
            "application_name": settings.application_name,
        }
    )


# URL parameters asyncpg.connect() takes as they are, with the type it needs them in.
ASYNCPG_PARAMETERS: dict[str, type] = {
    "target_session_attrs": str,
    "command_timeout": float,
    "statement_cache_size": int,
    "prepared_statement_cache_size": int,  # SQLAlchemy's own cache, read by its dialect
}


@dataclass(frozen=True)
class AsyncpgTarget:
    """What the async engine gets: a URL without libpq words, connect_args, and what was lost."""

    url: URL
    connect_args: dict[str, Any]
    dropped: list[str] = field(default_factory=list)


def asyncpg_target(settings: DatabaseSettings) -> AsyncpgTarget:
    """Translate the libpq words of a URL into asyncpg's arguments.

    SQLAlchemy's asyncpg dialect passes every query parameter to asyncpg.connect() as a keyword,
    and asyncpg knows none of libpq's (`sslmode` gives TypeError), so none stays in the URL.
    """
    url = settings.url
    check_scheme(url)
    pooler = is_pooler(settings)
    _refuse_startup_settings_on_pooler(settings)
    query = dict(url.query)
    args: dict[str, Any] = {
        "ssl": _asyncpg_ssl(effective_sslmode(settings), query),
        "timeout": float(settings.connect_timeout),
    }
    server_settings: dict[str, str] = {}
    dropped = []
    for name in ("sslrootcert", "sslcert", "sslkey"):
        query.pop(name, None)  # in the SSL context now
    if options := query.pop("options", None):
        server_settings["options"] = str(options)  # libpq sends it as this startup parameter
    for name, value in query.items():
        if name in ASYNCPG_PARAMETERS:
            args[name] = _coerce(name, value)
        else:
            dropped.append(name)
    if pooler:
        # PgBouncer in transaction mode hands each transaction to any server connection, where a
        # named prepared statement from another one does not exist.
        args |= {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    else:
        # PgBouncer refuses startup parameters it does not know; a direct server takes them.
        server_settings["application_name"] = settings.application_name
    if server_settings:
        args["server_settings"] = server_settings
    return AsyncpgTarget(url.set(drivername="postgresql+asyncpg", query={}), args, dropped)


def _asyncpg_ssl(sslmode: str, query: dict[str, Any]) -> ssl.SSLContext | str | bool:
    rootcert, cert, key = (query.get(name) for name in ("sslrootcert", "sslcert", "sslkey"))
    if sslmode == "disable":
        return False
    # libpq: given a root certificate, `require` verifies the chain as verify-ca does.
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and rootcert)
    if not verify and not cert:
        return sslmode  # allow, prefer, require: asyncpg takes libpq's words for these
    # "system" is libpq's word for the platform's CA store, which create_default_context loads.
    cafile = None if rootcert in (None, "system") else str(rootcert)
    try:
        context = ssl.create_default_context(cafile=cafile)
        if cert:
            context.load_cert_chain(str(cert), str(key) if key else None)
    except OSError as exc:
        raise ConfigurationError(
            f"DATABASE_URL's TLS files cannot be read ({exc.strerror}: {exc.filename})"
        ) from None
    if sslmode != "verify-full":
        context.check_hostname = False
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


def _coerce(name: str, value: Any) -> Any:
    try:
        return ASYNCPG_PARAMETERS[name](value)
    except ValueError:
        raise ConfigurationError(
            f"{name} in DATABASE_URL must be a number, got {value!r}"
        ) from None


def _refuse_startup_settings_on_pooler(settings: DatabaseSettings) -> None:
    if is_pooler(settings) and _has_startup_settings(settings.url.query.get("options")):
        raise ConfigurationError(
            "DATABASE_URL sends `options=-c …` to a -pooler host, which PgBouncer refuses "
            "(unsupported startup parameter: options): use the direct host, or SET LOCAL in a "
            "transaction"
        )


def _has_startup_settings(options: str | tuple[str, ...] | None) -> bool:
    # `options=endpoint=<id>` is Neon's SNI workaround and passes the pooler; `-c x=y` does not.
    text = " ".join(options) if isinstance(options, tuple) else options or ""
    return "-c" in text.split() or "--" in text


def redact(text: str, url: URL) -> str:
    """Remove the URL's password from a driver's message, raw or percent-encoded."""
    password = url.password
    if not password:
        return text
    for form in {str(password), quote_plus(str(password))}:
        text = text.replace(form, "***")
    return text
