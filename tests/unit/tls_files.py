"""Certificates and keys for TLS tests, and a TLS server on loopback that reports its clients."""

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization


@dataclass
class ClientFiles:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path  # encrypted with `passphrase`
    passphrase: str


def client_files(
    folder: Path,
    passphrase: str = "open sesame",  # noqa: S107 (a test key's)
    traditional: bool = False,
) -> ClientFiles:
    """A CA, and a client certificate whose key is encrypted as `openssl genpkey -aes256` does
    (PKCS#8), or as older tools do (`Proc-Type: 4,ENCRYPTED`)."""
    ca = trustme.CA()
    issued = ca.issue_cert("app@example.test")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    files = ClientFiles(
        ca, folder / "ca.pem", folder / "client.crt", folder / "client.key", passphrase
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    issued.cert_chain_pems[0].write_to_path(str(files.cert_file))
    files.key_file.write_bytes(encrypted)
    files.key_file.chmod(0o600)
    return files


@dataclass
class Seen:
    server_names: list[str | None] = field(default_factory=list)
    client_certificates: list[object] = field(default_factory=list)


@asynccontextmanager
async def tls_server(
    server_name: str, client_ca: trustme.CA
) -> AsyncIterator[tuple[int, trustme.CA, Seen]]:
    """A TLS server on 127.0.0.1 with a certificate for `server_name` only, that requires a
    client certificate from `client_ca` and records the SNI and certificate of each client."""
    server_ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ca.issue_cert(server_name).configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    seen = Seen()

    def sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        seen.server_names.append(name)

    context.sni_callback = sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.client_certificates.append(writer.get_extra_info("peercert"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], server_ca, seen
