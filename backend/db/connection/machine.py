"""What a connection plan reads from this machine: the login name libpq defaults to, the TLS
files a URL names (or libpq's defaults in ~/.postgresql/), and asyncpg's SSL context with its
CAs, CRL and client key loaded.

Called by backend.db.connection.plan only, once per plan. A named file that cannot be read is
refused here, naming the file and its parameter (the drivers would say "No such file or
directory: None", or silently not verify), and so is an encrypted client key without its
passphrase: OpenSSL would otherwise ask for it on the terminal, from inside the server.
"""

import os
import pwd
import ssl
from pathlib import Path

from backend.db.connection.target import Target
from backend.db.connection.tls import (
    DEFAULT_FILES,
    TLS_FILES,
    NamedHostContext,
    server_names,
    verifies,
)
from backend.settings import ConfigurationError, DatabaseSettings


def login_name() -> str:
    """The user libpq connects as when the URL names none: libpq's, not getpass's (asyncpg's),
    which prefers $USER and $LOGNAME."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise ConfigurationError(
            f"DATABASE_URL names no user, and this process's user ID ({os.geteuid()}) has no "
            "name to default to: give the user in DATABASE_URL"
        ) from None


def tls_files(settings: DatabaseSettings, sslmode: str) -> dict[str, str]:
    """The TLS files a driver would read: those named, else libpq's defaults that exist."""
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


def ssl_context(
    settings: DatabaseSettings, target: Target, sslmode: str, files: dict[str, str]
) -> NamedHostContext:
    """asyncpg's SSL context for what libpq does with `sslmode`: the root certificates and CRL
    of `files`, the host names of a hostaddr. The client key is load_client_key's."""
    rootcert = files.get("sslrootcert")
    verify = verifies(sslmode, files)
    context = NamedHostContext(ssl.PROTOCOL_TLS_CLIENT)
    context.names = server_names(target)
    # "system" is libpq's word for the platform's CA store.
    if rootcert in (None, "system"):
        context.load_default_certs()
    else:
        _load_pem(context, settings, "sslrootcert", rootcert)
    if verify and (crl := files.get("sslcrl")):
        _load_pem(context, settings, "sslcrl", crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    if sslmode != "verify-full":
        context.check_hostname = False
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_pem(context: ssl.SSLContext, settings: DatabaseSettings, name: str, path: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{settings.origin(name)} names {path}, which holds no PEM certificate or CRL"
        ) from None


def load_client_key(
    context: ssl.SSLContext, settings: DatabaseSettings, files: dict[str, str]
) -> None:
    """Load the client certificate and key, with DATABASE_URL's sslpassword, never prompting:
    a key that needs a passphrase nobody gave is refused when the plan is built, not met by a
    prompt at the first connect. libpq reads the same files with the same sslpassword."""
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
