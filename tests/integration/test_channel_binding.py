"""`channel_binding=require`, as Neon's console URLs carry it: proved by the server, not by us.

Channel binding (SCRAM-SHA-256-PLUS) ties the password exchange to the TLS channel the client
sees. The server's log line for a login does not say whether it was bound, so the test makes
a place where it matters: a relay that ends the client's TLS with a certificate of its own and
opens its own TLS to the server, as a man in the middle with a trusted certificate would. A
bound login through it fails at the server ("SCRAM channel binding check failed" in the
server's log); the same login unbound goes through, which proves the relay itself works. Every
libpq engine (psycopg2, psycopg 3 sync and async) binds; asyncpg cannot, and the layer says so.
"""

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from backend import Container
from backend.embedded.files import read_as_owner
from backend.testing.postgres import TestServer, trustme


class Relay:
    """A TLS relay on 127.0.0.1 with a certificate of its own, to `upstream` over TLS."""

    def __init__(self, upstream: int, server_ca: Path, folder: Path) -> None:
        authority = trustme().CA()  # not the server's: the client is told to trust this one
        self.ca_file = folder / "relay-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        self.for_clients = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(self.for_clients)
        self.for_server = ssl.create_default_context(cafile=str(server_ca))
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def __enter__(self) -> "Relay":
        async def listen() -> asyncio.Server:
            server = await asyncio.start_server(self.relay, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            return server

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def stop() -> None:
            self.server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(8)  # the client's SSLRequest
        writer.write(b"S")
        await writer.drain()
        await writer.start_tls(self.for_clients)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        up_writer.write(request)
        await up_writer.drain()
        assert await up_reader.readexactly(1) == b"S"
        await up_writer.start_tls(self.for_server, server_hostname="127.0.0.1")
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture
def relay(postgres: TestServer, tmp_path: Path) -> Iterator[Relay]:
    if not postgres.direct_tls or postgres.server is None or postgres.ca_file is None:
        pytest.skip(
            "channel binding needs a server that speaks TLS itself; this build has no OpenSSL "
            "and its TLS front ends TLS before the server"
        )
    with Relay(postgres.admin_url.port or 5432, postgres.ca_file, tmp_path) as relay:
        yield relay


def server_log(postgres: TestServer) -> str:
    assert postgres.server is not None
    return (read_as_owner(postgres.server.log_file) or b"").decode(errors="replace")


def through(relay: Relay, database_url: URL, binding: str) -> URL:
    return database_url.set(port=relay.port).update_query_dict(
        {"sslrootcert": str(relay.ca_file), "channel_binding": binding}
    )


ENGINES = {
    # (DATABASE_URL's driver, DATABASE_ASYNC_DRIVER, which engine)
    "psycopg2": ("postgresql+psycopg2", "asyncpg", "engine"),
    "psycopg sync": ("postgresql+psycopg", "asyncpg", "engine"),
    "psycopg async": ("postgresql+psycopg2", "psycopg", "async_engine"),
}


def connect(container: Container, which: str) -> int:
    engine = getattr(container, which)()
    if which == "engine":
        with engine.connect() as connection:
            return int(connection.scalar(sa.text("SELECT 1")))

    async def async_connect() -> int:
        async with engine.connect() as connection:
            return int(await connection.scalar(sa.text("SELECT 1")))

    return asyncio.run(async_connect())


@pytest.mark.parametrize("name", ENGINES)
def test_a_bound_login_through_a_man_in_the_middle_fails_at_the_server(
    monkeypatch: pytest.MonkeyPatch,
    postgres: TestServer,
    database_url: URL,
    relay: Relay,
    name: str,
) -> None:
    scheme, async_driver, which = ENGINES[name]
    pytest.importorskip("psycopg")

    def container(binding: str) -> Container:
        url = through(relay, database_url, binding).set(drivername=scheme)
        monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
        monkeypatch.setenv("DATABASE_ASYNC_DRIVER", async_driver)
        monkeypatch.setenv("DATABASE_CONNECT_RETRIES", "0")
        return Container()

    assert connect(container("disable"), which) == 1  # the relay works: unbound, it passes
    before = len(server_log(postgres))
    with pytest.raises(sa.exc.OperationalError):
        connect(container("require"), which)
    deadline = time.monotonic() + 5
    while "channel binding check failed" not in server_log(postgres)[before:]:
        assert time.monotonic() < deadline, server_log(postgres)[before:][-2000:]
        time.sleep(0.05)


def test_asyncpg_cannot_bind_and_the_layer_says_so(
    monkeypatch: pytest.MonkeyPatch,
    database_url: URL,
    relay: Relay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = through(relay, database_url, "require").set(drivername="postgresql+psycopg2")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("DATABASE_ASYNC_DRIVER", "asyncpg")
    # The man in the middle gets through: asyncpg has no channel binding (its SCRAM offers
    # SCRAM-SHA-256 only), which is why DATABASE_ASYNC_DRIVER=psycopg exists.
    assert connect(Container(), "async_engine") == 1
    assert "channel_binding is not enforced on the async path" in caplog.text
