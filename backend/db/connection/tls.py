"""TLS rules: the sslmode a target gets, and what asyncpg needs to do what libpq does with it.

The policy: plaintext (sslmode disable, allow or prefer) only when every address libpq or
asyncpg could connect to is loopback or a unix socket. An sslmode is always given to the
drivers, so that PGSSLMODE or a service file cannot weaken it. No I/O: the TLS files are found
and loaded by the plan (backend.db.connection.machine).
"""

import ssl

from backend.db.connection.target import Target
from backend.settings import ConfigurationError, DatabaseSettings

PLAINTEXT_SSLMODES = frozenset({"disable", "allow", "prefer"})
TLS_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
# What libpq (and asyncpg) read from ~/.postgresql/ when a parameter leaves it out.
DEFAULT_FILES = {
    "sslrootcert": "root.crt",
    "sslcert": "postgresql.crt",
    "sslkey": "postgresql.key",
    "sslcrl": "root.crl",
}


def effective_sslmode(settings: DatabaseSettings, target: Target) -> str:
    """The sslmode to connect with, refusing plaintext to a remote host unless allowed."""
    remote = target.first_remote()
    rootcert = settings.url.query.get("sslrootcert")
    if settings.sslmode is None:
        if rootcert == "system":
            return "verify-full"  # libpq's default with it, and the only mode it allows
        # Local development servers seldom have a certificate; Neon always needs TLS.
        return "prefer" if remote is None else "require"
    if (
        settings.sslmode in PLAINTEXT_SSLMODES
        and remote is not None
        and not settings.allow_insecure
    ):
        source = settings.origin("hostaddr" if remote.address else "host")
        raise ConfigurationError(
            f"sslmode={settings.sslmode} would allow plaintext to {remote.connects_to} (from "
            f"{source}), and Neon refuses connections without TLS: use DATABASE_SSLMODE=require "
            "(or verify-full), or set DATABASE_ALLOW_INSECURE=true if this host really is on a "
            "trusted network"
        )
    if rootcert == "system" and settings.sslmode != "verify-full":
        raise ConfigurationError(
            f"{settings.origin('sslrootcert')} is system, which libpq allows with "
            f"sslmode=verify-full only, got sslmode={settings.sslmode}: set "
            "DATABASE_SSLMODE=verify-full"
        )
    return settings.sslmode


def verifies(sslmode: str, files: dict[str, str]) -> bool:
    """Whether libpq checks the server's certificate chain with `sslmode` and these files."""
    # libpq: given a root certificate, `require` verifies the chain as verify-ca does.
    return sslmode in ("verify-ca", "verify-full") or (
        sslmode == "require" and "sslrootcert" in files
    )


def server_names(target: Target) -> dict[str, str]:
    """Each hostaddr's host name, which libpq checks the certificate against (and sends as SNI)."""
    return {e.address: e.host for e in target.endpoints if e.address and e.host}


def asyncpg_ssl_word(target: Target, sslmode: str, files: dict[str, str]) -> str | bool | None:
    """asyncpg's `ssl` argument where a word of its own does what libpq does with `sslmode`;
    None where only an SSLContext can (backend.db.connection.machine.ssl_context)."""
    if sslmode == "disable":
        return False
    cert = files.get("sslcert")
    if sslmode in ("allow", "prefer") and not cert:
        return sslmode  # asyncpg's own: TLS if the server takes it, plaintext if not (local)
    if not verifies(sslmode, files) and not cert and not server_names(target):
        return sslmode  # `require`: encrypted, not verified; asyncpg takes libpq's word
    return None


class NamedHostContext(ssl.SSLContext):
    """An SSLContext that names each server by its host while connecting to its hostaddr.

    libpq connects to `hostaddr` and still sends `host` as SNI (Neon routes on it) and checks the
    certificate against it; asyncpg knows only the address it connects to, and asyncio hands
    that to wrap_bio as the server's name."""

    names: dict[str, str]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if isinstance(server_hostname, str):
            server_hostname = self.names.get(server_hostname, server_hostname)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
