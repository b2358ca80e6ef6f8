"""Where a URL connects: every host, address and port libpq would try, as explicit values.

libpq reads a host list (`host=a,b` in the query, or `a,b` in the URL), a `hostaddr` list
(the numeric address actually connected to; `host` then only names the server for TLS), a
port list, and its PG* defaults (filled into the URL by backend.settings). asyncpg has no
`hostaddr`, reads another default for a missing host, and SQLAlchemy's asyncpg dialect drops
the query. So the target is resolved here, the way libpq does it, and both engines get it
explicitly. No I/O: the login name libpq defaults to is read by the plan
(backend.db.connection.machine) and handed in.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import URL

from backend.settings import ConfigurationError

# Where the libpq of psycopg2-binary looks for a server when no host is named (its build sets
# it; tests/unit/test_target.py checks it), and its port.
DEFAULT_SOCKET_DIR = "/var/run/postgresql"
DEFAULT_PORT = 5432
# A name or IPv4 address with a port, which SQLAlchemy splits even in a single host=h:p.
HOST_PORT = re.compile(r"[a-zA-Z0-9\-.]*:\d*")


@dataclass(frozen=True)
class Endpoint:
    """One server libpq may try: a host name, an IP, or a unix-socket directory."""

    host: str  # "" only when `address` is given without a name
    address: str | None  # libpq's hostaddr: connected to instead of resolving `host`
    port: int

    @property
    def connects_to(self) -> str:
        return self.address or self.host

    @property
    def is_socket(self) -> bool:
        # '@' is Linux's abstract socket namespace, which libpq also takes as a host.
        return self.address is None and self.host.startswith(("/", "@"))

    def is_local(self) -> bool:
        """Loopback or a unix socket: the only places plaintext cannot cross a network."""
        if self.is_socket:
            return True
        if self.address is None and self.host.lower() in ("localhost", "localhost."):
            return True
        try:
            ip = ipaddress.ip_address(self.connects_to)
        except ValueError:
            return False  # a name could resolve anywhere
        mapped = getattr(ip, "ipv4_mapped", None)
        return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass(frozen=True)
class Target:
    endpoints: tuple[Endpoint, ...]
    user: str
    database: str

    def first_remote(self) -> Endpoint | None:
        return next((e for e in self.endpoints if not e.is_local()), None)

    @property
    def single_host(self) -> Endpoint | None:
        """The one TCP host, when that is all there is: it fits in the URL's own host field."""
        if len(self.endpoints) == 1 and not self.endpoints[0].address:
            endpoint = self.endpoints[0]
            return None if endpoint.is_socket else endpoint
        return None


def _in_url(parameter: str) -> str:
    return f"{parameter} in DATABASE_URL"


def resolve(url: URL, user: str, origin: Callable[[str], str] = _in_url) -> Target:
    """The endpoints libpq would try for `url`, its user and its database.

    `user`: the URL's, or where it names none libpq's default, the login name of the process.
    `origin` names where a parameter came from (DatabaseSettings.origin), for the messages."""
    hosts, ports = _hosts_and_ports(url, origin)
    addresses = _split(url.query.get("hostaddr"))
    if addresses:
        if hosts and len(hosts) != len(addresses):
            raise ConfigurationError(
                f"{origin('host')} names {len(hosts)} hosts and "
                f"{origin('hostaddr')} {len(addresses)} addresses: give one hostaddr "
                "per host (libpq: could not match host names to hostaddr values)"
            )
        for given in filter(None, addresses):
            try:
                ipaddress.ip_address(given)
            except ValueError:
                raise ConfigurationError(
                    f"{origin('hostaddr')} must be numeric IP addresses, got "
                    f"{given!r} (a name goes in host)"
                ) from None
    count = len(addresses) or len(hosts) or 1
    if len(ports) == 1:
        ports *= count
    elif ports and len(ports) != count:
        raise ConfigurationError(
            f"{origin('port')} gives {len(ports)} ports for {count} hosts: give one "
            "port, or one per host"
        )
    endpoints = []
    for i in range(count):
        host = hosts[i] if hosts else ""
        address: str | None = (addresses[i] if addresses else "") or None
        if not host and not address:
            host = DEFAULT_SOCKET_DIR  # what libpq does with an empty entry, or with none
        port = ports[i] if ports else None
        endpoints.append(Endpoint(host, address, port or DEFAULT_PORT))
    # libpq's own default: a database named after the user.
    return Target(tuple(endpoints), user, url.database or user)


def _hosts_and_ports(url: URL, origin: Callable[[str], str]) -> tuple[list[str], list[int | None]]:
    query_host = url.query.get("host")
    if isinstance(query_host, str) and "port" not in url.query and HOST_PORT.fullmatch(query_host):
        query_host = (query_host,)  # SQLAlchemy reads host=h:p so too
    if isinstance(query_host, tuple):
        # SQLAlchemy's own form, host=h1:p1&host=h2:p2: each host carries its port.
        if "port" in url.query:
            raise ConfigurationError(
                "DATABASE_URL mixes host=h1:p1&host=h2:p2 with port=: give the ports one way"
            )
        pairs = [_host_and_port(token) for token in query_host]
        return [host for host, _ in pairs], [
            _port(port, f"the port in {origin('host')}") if port else None for _, port in pairs
        ]
    # The query's host wins over the URL's, as with libpq's URIs (and SQLAlchemy).
    hosts = _split(query_host) if query_host is not None else _split(url.host)
    port_list = url.query.get("port")
    raw_ports = _split(port_list) if port_list is not None else [str(url.port or "")]
    if url.port == 0 and port_list is None:
        raw_ports = ["0"]  # SQLAlchemy drops port 0 and libpq would use 5432
    if raw_ports == [""]:
        return hosts, []
    return hosts, [_port(port, origin("port")) if port else None for port in raw_ports]


def _host_and_port(token: str) -> tuple[str, str]:
    if token.startswith("["):  # [::1]:5432
        host, _, rest = token[1:].partition("]")
        return host, rest.removeprefix(":")
    if token.count(":") == 1:
        host, _, port = token.partition(":")
        return host, port
    return token, ""


def _port(text: str, origin: str) -> int:
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    raise ConfigurationError(f"{origin} must be a port number from 1 to 65535, got {text!r}")


def _split(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return str(value).split(",")
