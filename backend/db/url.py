"""Pure rules on a database URL: driver scheme, TLS policy, Neon's pooler. No I/O."""

import ipaddress
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
    if is_pooler(settings) and _has_startup_settings(url.query.get("options")):
        raise ConfigurationError(
            "DATABASE_URL sends `options=-c …` to a -pooler host, which PgBouncer refuses "
            "(unsupported startup parameter: options): use the direct host, or SET LOCAL in a "
            "transaction"
        )
    if url.query.get("sslrootcert") == "system" and libpq_version < 160000:
        raise ConfigurationError(
            f"sslrootcert=system needs libpq 16 or newer, and psycopg2 here uses libpq "
            f"{libpq_version // 10000}: give the CA bundle's path instead, e.g. "
            "sslrootcert=/etc/ssl/certs/ca-certificates.crt"
        )
    # SQLAlchemy refuses postgres:// since 1.4, and a bare postgresql:// leaves the choice of driver
    # to SQLAlchemy's default; the sync path is psycopg2 on purpose (it never prepares server-side,
    # so it is safe behind the pooler).
    return url.set(drivername="postgresql+psycopg2").update_query_dict(
        {
            "sslmode": effective_sslmode(settings),
            "connect_timeout": str(settings.connect_timeout),
            "application_name": settings.application_name,
        }
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
