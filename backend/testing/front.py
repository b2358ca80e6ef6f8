"""A stand-in for Neon's proxy: TLS in front of a PostgreSQL, with Neon's ways of misbehaving.

It speaks PostgreSQL's SSLRequest handshake, as Neon's proxy does, so it gives TLS to a server
built without it; it refuses plaintext with Neon's own words; and it can hold new connections
(a cold start), refuse them for a while (a compute restarting), drop every connection, add
latency to each direction (a WAN link to Neon on loopback), and stall: forward nothing at all,
while the sockets stay open (a link gone dead under live TCP endpoints).
"""

import asyncio
import contextlib
import ssl
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
T = TypeVar("T")


def error_response(code: str, message: str) -> bytes:
    """A FATAL ErrorResponse message, as a server sends it before authentication."""
    fields = b"".join(
        kind + text.encode() + b"\0"
        for kind, text in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


@dataclass
class Traffic:
    """What crossed the front, client side. A flight is one turn of one side speaking: bytes
    from the client after the server last spoke (however many reads they arrive in) are one
    flight up, so flights_up counts round trips."""

    connections: int = 0
    flights_up: int = 0
    flights_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class TlsFront:
    """Listens on 127.0.0.1:`port`, forwards to `upstream` (plaintext, from `source_address`)."""

    upstream: tuple[str, int]
    certificate: Path
    key: Path
    source_address: str = "127.0.0.2"
    connect_delay: float = 0.0  # seconds a new connection waits: a cold start
    latency: float = 0.0  # seconds added to each direction of every flight
    port: int = 0
    traffic: Traffic = field(default_factory=Traffic)
    _refuse_until: float = 0.0
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        ready = threading.Event()
        self._flowing.set()

        def run() -> None:
            self._loop = loop = asyncio.new_event_loop()
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            loop.close()

        threading.Thread(target=run, name="tls-front", daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop = None

    def refuse_for(self, seconds: float) -> None:
        """Refuse new connections as Neon does while a compute restarts."""
        self._refuse_until = time.monotonic() + seconds

    def drop_connections(self) -> None:
        """Cut every connection now, as a lost compute or proxy does."""
        self._call(self._drop())

    def stall(self) -> None:
        """Forward nothing, either way, on every connection, established or new, until resume().

        The sockets stay open and the kernel acknowledges what arrives, so the client sees no
        error, only silence: TCP keepalives are answered, and only a client-side timeout ends
        the wait."""
        self._call(self._flow(False))

    def resume(self) -> None:
        """Forward again: what was held goes through, in order."""
        if self._loop is not None:
            self._call(self._flow(True))

    def reset_traffic(self) -> None:
        self.traffic = Traffic()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(self.certificate, self.key)
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server:
            self._server.close()
        await self._drop()

    async def _flow(self, flowing: bool) -> None:
        self._flowing.set() if flowing else self._flowing.clear()

    async def _drop(self) -> None:
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            await self._serve(reader, writer)
        except* (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a peer that went away; nothing to tell anyone
        finally:
            self._pipes.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if code == GSSENC_REQUEST:  # libpq may try GSS encryption first: decline it
            writer.write(b"N")
            length, code = struct.unpack("!ii", await reader.readexactly(8))
        if code != SSL_REQUEST:
            await reader.readexactly(length - 8)  # the plaintext StartupMessage
            # Neon's proxy's own words for a client without TLS.
            writer.write(
                error_response("08P01", "connection is insecure (try using `sslmode=require`)")
            )
            await writer.drain()
            return
        writer.write(b"S")
        await writer.drain()
        await writer.start_tls(self._context)
        startup_length = struct.unpack("!i", await reader.readexactly(4))[0]
        startup = struct.pack("!i", startup_length) + await reader.readexactly(startup_length - 4)
        if time.monotonic() < self._refuse_until:
            writer.write(error_response("08006", "Couldn't connect to compute node"))
            await writer.drain()
            return
        await asyncio.sleep(self.connect_delay)
        await self._flowing.wait()
        upstream_reader, upstream_writer = await asyncio.open_connection(
            *self.upstream, local_addr=(self.source_address, 0)
        )
        self.traffic.connections += 1
        upstream_writer.write(startup)
        turn = [""]  # who spoke last on this connection: "up" or "down"
        try:
            async with asyncio.TaskGroup() as pipe:
                pipe.create_task(self._pump(reader, upstream_writer, turn, up=True))
                pipe.create_task(self._pump(upstream_reader, writer, turn, up=False))
        finally:
            upstream_writer.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        turn: list[str],
        *,
        up: bool,
    ) -> None:
        # Flights keep their order and each is delayed by `latency` from when it arrived, so
        # the link behaves like a long wire rather than a slow one.
        flights: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrived, data = await flights.get()
                if data and (wait := arrived + self.latency - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()  # a stalled link passes nothing, not even the end
                if not data:
                    break
                sink.write(data)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.write_eof() if sink.can_write_eof() else sink.close()

        delivery = asyncio.create_task(deliver())
        try:
            side = "up" if up else "down"
            while data := await source.read(65536):
                new_turn = turn[0] != side
                turn[0] = side
                if up:
                    self.traffic.flights_up += new_turn
                    self.traffic.bytes_up += len(data)
                else:
                    self.traffic.flights_down += new_turn
                    self.traffic.bytes_down += len(data)
                flights.put_nowait((time.monotonic(), data))
            flights.put_nowait((time.monotonic(), b""))  # end of stream, after what came before
            await delivery
        finally:
            delivery.cancel()
