"""TLS: the sslmode a target gets, the client's TLS files, and asyncpg's SSL context.

The policy: plaintext (sslmode disable, allow or prefer) only when every address libpq or
asyncpg could connect to is loopback or a unix socket. An sslmode is always given to the
drivers, so that PGSSLMODE or a service file cannot weaken it. Files are checked when the
engines are built, and an encrypted client key without its passphrase is refused then: OpenSSL
would otherwise ask for it on the terminal, from inside the server.
"""

import ssl
from pathlib import Path

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


def tls_files(settings: DatabaseSettings, sslmode: str) -> dict[str, str]:
    """The TLS files a driver would read: those named, else libpq's defaults that exist.

    A named file that cannot be read is refused here, naming the file and its parameter (the
    drivers would say "No such file or directory: None", or silently not verify)."""
    files: dict[str, str] = {}
    if sslmode == "disable":
        return files
    for name in TLS_FILES:
        value = settings.url.query.get(name)
        if value == "system" and name == "sslrootcert":
            files[name] = "system"
        elif value:
            path = str(value)
            try:
                Path(path).open("rb").close()
            except OSError as exc:
                raise ConfigurationError(
                    f"{settings.origin(name)} names {path}, which cannot be read ({exc.strerror})"
                ) from None
            files[name] = path
        else:
            default = _default_file(DEFAULT_FILES[name])
            if default is not None:
                files[name] = default
    if settings.url.query.get("sslcertmode") == "disable":  # libpq then sends no certificate
        files.pop("sslcert", None)
    if "sslcert" not in files:
        files.pop("sslkey", None)
    return files


def _default_file(name: str) -> str | None:
    try:
        path = Path.home() / ".postgresql" / name
    except (RuntimeError, KeyError):  # no home directory
        return None
    return str(path) if path.is_file() else None


def load_client_certificate(
    context: ssl.SSLContext, settings: DatabaseSettings, files: dict[str, str]
) -> None:
    """Load the client certificate and key, with DATABASE_URL's sslpassword, never prompting.

    Called with a throwaway context when the engines are built, so that a key that needs a
    passphrase nobody gave is refused then, not met by a prompt at the first connect."""
    cert, key = files["sslcert"], files.get("sslkey")
    password = settings.secret("sslpassword")
    asked = False

    def passphrase() -> str:
        # Without a callable, OpenSSL asks on the terminal (and libpq does, without sslpassword).
        nonlocal asked
        asked = True
        if password is None:
            raise ConfigurationError(
                f"the client key {key or cert} is encrypted and DATABASE_URL gives no "
                "sslpassword: add its passphrase as sslpassword=… (percent-encoded) to "
                "DATABASE_URL (OpenSSL would otherwise ask for it on the terminal)"
            )
        return password

    try:
        context.load_cert_chain(cert, key, password=passphrase)
    except ssl.SSLError:
        if asked:
            raise ConfigurationError(
                f"sslpassword in DATABASE_URL does not decrypt the client key {key or cert}"
            ) from None
        raise ConfigurationError(
            f"the client certificate {cert} ({settings.origin('sslcert')}) has no usable "
            f"private key{f' in {key}' if key else ''}: give sslkey=<the key file>"
        ) from None


def check_client_key(settings: DatabaseSettings, files: dict[str, str]) -> None:
    if "sslcert" in files:
        load_client_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings, files)


def _load_pem(context: ssl.SSLContext, settings: DatabaseSettings, name: str, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{settings.origin(name)} names {path}, which holds no PEM certificate or CRL"
        ) from None


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


def asyncpg_ssl(
    settings: DatabaseSettings, target: Target, sslmode: str, files: dict[str, str]
) -> ssl.SSLContext | str | bool:
    """What asyncpg's `ssl` argument must be to do what libpq does with `sslmode`."""
    if sslmode == "disable":
        return False
    rootcert, cert = files.get("sslrootcert"), files.get("sslcert")
    names = {e.address: e.host for e in target.endpoints if e.address and e.host}
    # libpq: given a root certificate, `require` verifies the chain as verify-ca does.
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and rootcert)
    if sslmode in ("allow", "prefer") and not cert:
        return sslmode  # asyncpg's own: TLS if the server takes it, plaintext if not (local)
    if not verify and not cert and not names:
        return sslmode  # `require`: encrypted, not verified; asyncpg takes libpq's word
    context = NamedHostContext(ssl.PROTOCOL_TLS_CLIENT)
    context.names = names
    # "system" is libpq's word for the platform's CA store.
    if rootcert in (None, "system"):
        context.load_default_certs()
    else:
        _load_pem(context, settings, "sslrootcert", rootcert)
    if verify and (crl := files.get("sslcrl")):
        _load_pem(context, settings, "sslcrl", crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    if cert:
        load_client_certificate(context, settings, files)
    if sslmode != "verify-full":
        context.check_hostname = False
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context
