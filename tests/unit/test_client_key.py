"""An encrypted client key: its passphrase reaches both drivers, and nothing ever prompts.

Issue 9, item 8: the async path dropped `sslpassword`, so OpenSSL asked for the passphrase on
the terminal from inside the event loop, and the first async request froze the whole server.
libpq asks too when no sslpassword is given.
"""

import asyncio
import fcntl
import os
import select
import ssl
import subprocess
import sys
import termios
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from backend.settings import ConfigurationError
from tests.unit.drivers import asyncpg_arguments, psycopg2_arguments
from tests.unit.test_settings import NEON, make_container
from tests.unit.tls_files import ClientFiles, client_files, tls_server

TRY_BOTH_ENGINES = """
from backend import Container
from backend.settings import ConfigurationError
container = Container()
for name in ("engine", "async_engine"):
    try:
        getattr(container, name)()
        print(name, "built", flush=True)
    except ConfigurationError as error:
        print(name, "refused:", error, flush=True)
"""


def with_files(files: ClientFiles, **query: str) -> str:
    parameters = {"sslcert": str(files.cert_file), "sslkey": str(files.key_file), **query}
    return NEON + "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in parameters.items())


def run_on_a_terminal(
    env: dict[str, str], script: str = TRY_BOTH_ENGINES, timeout: float = 60
) -> tuple[str, str]:
    """Run `script` with a pseudo-terminal as its controlling terminal, where OpenSSL would ask
    for a passphrase (and wait for it). Returns its output and what it wrote to the terminal."""
    controller, terminal = os.openpty()

    def take_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal)
    prompted = b""
    deadline = time.monotonic() + timeout
    try:
        while child.poll() is None:
            if time.monotonic() > deadline:
                child.kill()
                pytest.fail(f"still waiting after {timeout} s; the terminal shows {prompted!r}")
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    prompted += os.read(controller, 1024)
                except OSError:
                    break
        output = child.communicate(timeout=timeout)[0].decode()
    finally:
        os.close(controller)
        if child.poll() is None:
            child.kill()
    return output, prompted.decode(errors="replace")


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "traditional"])
def test_an_encrypted_key_without_its_passphrase_is_refused_at_startup_without_a_prompt(
    tmp_path: Path, traditional: bool
) -> None:
    files = client_files(tmp_path, traditional=traditional)
    env = {**os.environ, "DATABASE_URL": with_files(files)}
    output, terminal = run_on_a_terminal(env)
    assert "pass phrase" not in terminal.lower()
    for engine in ("engine", "async_engine"):
        line = next(line for line in output.splitlines() if line.startswith(engine + " "))
        assert line == (
            f"{engine} refused: the client key {files.key_file} is encrypted and DATABASE_URL "
            "gives no sslpassword: add its passphrase as sslpassword=… (percent-encoded) to "
            "DATABASE_URL (OpenSSL would otherwise ask for it on the terminal)"
        )


def test_the_passphrase_reaches_both_drivers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = client_files(tmp_path)
    container = make_container(monkeypatch, with_files(files, sslpassword=files.passphrase))
    sync = psycopg2_arguments(container.engine())
    assert (sync["sslkey"], sync["sslpassword"]) == (str(files.key_file), files.passphrase)
    assert isinstance(asyncpg_arguments(container.async_engine())["ssl"], ssl.SSLContext)


def test_the_async_context_presents_the_key_and_names_the_host_of_a_hostaddr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real TLS handshake on loopback, through asyncio as asyncpg makes it: the server
    requires the client certificate (so the key was unlocked), and its own certificate names
    only db.example.test, reached by hostaddr=127.0.0.1 (so the name went to SNI and to the
    verify-full check, as libpq does, and not the address asyncpg connects to)."""
    files = client_files(tmp_path)

    async def handshake() -> tuple[list[str | None], int]:
        async with tls_server("db.example.test", files.ca) as (port, server_ca, seen):
            server_ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
            url = with_files(
                files,
                sslpassword=files.passphrase,
                sslmode="verify-full",
                sslrootcert=str(tmp_path / "server-ca.pem"),
            ).replace("ep-cool-darkness-123456.us-east-2.aws.neon.tech", "db.example.test")
            container = make_container(monkeypatch, f"{url}&hostaddr=127.0.0.1&port={port}")
            # What the async engine hands asyncpg.connect() (asyncpg_arguments runs a loop).
            args = container.connection_plan().async_driver.connect_args
            assert (args["host"], args["port"]) == (["127.0.0.1"], [port])
            _, writer = await asyncio.open_connection(
                args["host"][0], port, ssl=args["ssl"], server_hostname=args["host"][0]
            )
            await writer.wait_closed()
            return seen.server_names, len(seen.client_certificates)

    names, certificates = asyncio.run(handshake())
    assert names == ["db.example.test"]
    assert certificates == 1


def test_a_wrong_passphrase_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = client_files(tmp_path)
    container = make_container(monkeypatch, with_files(files, sslpassword="not it"))
    for engine in (container.engine, container.async_engine):
        with pytest.raises(
            ConfigurationError, match="sslpassword in DATABASE_URL does not decrypt"
        ):
            engine()


def test_keys_from_libpq_variables_and_defaults_are_checked_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = client_files(tmp_path)
    monkeypatch.setenv("PGSSLCERT", str(files.cert_file))
    monkeypatch.setenv("PGSSLKEY", str(files.key_file))
    with pytest.raises(ConfigurationError, match=f"client key {files.key_file} is encrypted"):
        make_container(monkeypatch).engine()
    # libpq's own default, ~/.postgresql/postgresql.{crt,key}, when nothing names a file.
    monkeypatch.delenv("PGSSLCERT")
    monkeypatch.delenv("PGSSLKEY")
    home = tmp_path / "home"
    (home / ".postgresql").mkdir(parents=True)
    files.cert_file.rename(home / ".postgresql" / "postgresql.crt")
    files.key_file.rename(home / ".postgresql" / "postgresql.key")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ConfigurationError, match=r"\.postgresql/postgresql\.key is encrypted"):
        make_container(monkeypatch).async_engine()


@pytest.mark.parametrize("parameter", ["sslrootcert", "sslcert", "sslkey", "sslcrl"])
def test_a_missing_tls_file_is_named_with_its_parameter(
    monkeypatch: pytest.MonkeyPatch, parameter: str
) -> None:
    # Issue 9, item 12: "No such file or directory: None".
    container = make_container(monkeypatch, f"{NEON}?{parameter}=/nonexistent/file.pem")
    message = f"^{parameter} in DATABASE_URL names /nonexistent/file.pem, which cannot be read"
    for engine in (container.engine, container.async_engine):
        with pytest.raises(ConfigurationError, match=message):
            engine()
