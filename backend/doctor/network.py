"""The way to the server, one layer at a time: DNS, TCP, and TLS as PostgreSQL negotiates it.

TLS is checked on a raw socket, by PostgreSQL's own handshake: the 8-byte SSLRequest, the
server's one-byte answer ('S': go on, 'N': no TLS here), then the TLS handshake, with the
SSL context the async path uses (the connection plan's).
Nothing more is sent: no startup packet, no password.
"""

import socket
import ssl
import struct

from backend.db.connection.plan import ConnectionPlan
from backend.db.connection.target import Endpoint
from backend.doctor.report import Step

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def dns(endpoint: Endpoint, origin: str) -> tuple[Step, list[str]]:
    """The addresses the endpoint's name resolves to (socket.getaddrinfo, as libpq does)."""
    if endpoint.is_socket:
        return Step("dns", "pass", f"unix socket in {endpoint.host}: no name to look up"), []
    if endpoint.address:
        named = f" for {endpoint.host}" if endpoint.host else ""
        return Step("dns", "pass", f"hostaddr {endpoint.address}{named}: no lookup"), [
            endpoint.address
        ]
    try:
        found = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return Step(
            "dns",
            "fail",
            f"{endpoint.host} does not resolve ({reason})",
            fix=f"check the host name ({origin}): Neon's are ep-<name>-<id>[-pooler].<region>"
            ".aws.neon.tech; copy the connection string from the console",
            facts={"host": endpoint.host},
        ), []
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    return Step(
        "dns",
        "pass",
        f"{endpoint.host} → {', '.join(addresses)}",
        facts={"host": endpoint.host, "addresses": addresses},
    ), addresses


def tcp(endpoint: Endpoint, addresses: list[str], timeout: float) -> tuple[Step, str | None]:
    """The first address that takes a TCP connection (or the unix socket), as libpq tries."""
    if endpoint.is_socket:
        path = f"{endpoint.host}/.s.PGSQL.{endpoint.port}"
        try:
            with socket.socket(socket.AF_UNIX) as unix:
                unix.settimeout(timeout)
                unix.connect(path)
        except OSError as exc:
            return _refused(endpoint, path, exc), None
        return Step("tcp", "pass", f"{path} answers", facts={"socket": path}), path
    errors: list[tuple[str, OSError]] = []
    for address in addresses:
        try:
            socket.create_connection((address, endpoint.port), timeout).close()
        except OSError as exc:
            errors.append((address, exc))
            continue
        where = f"{address}:{endpoint.port}"
        return Step("tcp", "pass", f"{where} answers", facts={"address": where}), address
    last, error = errors[-1]
    return _refused(endpoint, f"{last}:{endpoint.port}", error), None


def _refused(endpoint: Endpoint, where: str, exc: OSError) -> Step:
    reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
    return Step(
        "tcp",
        "fail",
        f"nothing takes connections at {where} ({reason})",
        fix="check the port in DATABASE_URL (Neon's endpoints listen on 5432) and that the "
        "server runs; from a private network, that a firewall lets it through",
        facts={"address": where, "error": reason},
    )


class NoTls(Exception):
    """The server answered the SSLRequest with 'N' (or something else)."""


def tls(plan: ConnectionPlan, endpoint: Endpoint, address: str, timeout: float) -> Step:
    """Negotiate TLS as the drivers would for the plan's sslmode; say what was agreed and
    verified."""
    sslmode = plan.sslmode
    if sslmode == "disable":
        return Step("tls", "skip", "sslmode=disable: plaintext (every address is local)")
    if endpoint.is_socket:
        return Step("tls", "skip", "a unix socket: nothing crosses a network")
    wanted = plan.ssl
    context = wanted if isinstance(wanted, ssl.SSLContext) else _unverified()
    verifying = context.verify_mode != ssl.CERT_NONE
    name = endpoint.host or None
    facts: dict[str, object] = {"sslmode": sslmode, "verified": False}
    try:
        protocol, cipher = handshake(address, endpoint.port, context, name, timeout)
    except NoTls as exc:
        if sslmode in ("allow", "prefer"):
            return Step(
                "tls",
                "warn",
                f"{exc}: plaintext, as sslmode={sslmode} allows on a local host",
                fix="to test TLS as on Neon, turn ssl on in the server and set "
                "DATABASE_SSLMODE=require",
                facts=facts,
            )
        return Step(
            "tls",
            "fail",
            str(exc),
            facts=facts,
            fix="this is not a server that takes TLS (Neon's always do): check the host and "
            "port in DATABASE_URL",
        )
    except ssl.SSLCertVerificationError as exc:
        facts["why"] = exc.verify_message
        return Step(
            "tls",
            "fail",
            f"the server's certificate does not verify: {exc.verify_message}",
            fix=_verify_fix(exc),
            facts=facts,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        return Step(
            "tls",
            "fail",
            f"the TLS handshake failed: {exc}",
            facts=facts,
            fix="check sslmode, sslrootcert, sslcert and sslkey in DATABASE_URL",
        )
    facts |= {"protocol": protocol, "cipher": cipher}
    agreed = f"{protocol}, {cipher}"
    if verifying:
        facts |= {"verified": True, "why": _how_verified(plan, context, name)}
        return Step("tls", "pass", f"{agreed}, certificate verified: {facts['why']}", facts=facts)
    # Encrypted without checking whom to: say whether checking would pass, and how to ask.
    facts["why"] = why = f"sslmode={sslmode} encrypts without checking the certificate"
    would = would_verify(address, endpoint.port, name, timeout)
    facts["system_cas"] = would
    detail = f"{agreed}, certificate not verified: {why}; against the system CAs it {would}"
    if endpoint.is_local():
        return Step("tls", "pass", detail, facts=facts)
    return Step(
        "tls",
        "warn",
        detail,
        facts=facts,
        fix="set DATABASE_SSLMODE=verify-full and add sslrootcert=system to DATABASE_URL "
        "(Neon's certificates chain to Let's Encrypt's ISRG Root X1)",
    )


def handshake(
    address: str, port: int, context: ssl.SSLContext, name: str | None, timeout: float
) -> tuple[str, str]:
    """PostgreSQL's SSLRequest, then TLS: the protocol and cipher agreed."""
    with socket.create_connection((address, port), timeout) as raw:
        raw.sendall(SSL_REQUEST)
        answer = raw.recv(1)
        if answer == b"N":
            raise NoTls("the server does not offer TLS (it answered N to the SSLRequest)")
        if answer != b"S":
            raise NoTls(f"the server answered {answer!r} to the SSLRequest: is it PostgreSQL?")
        with context.wrap_socket(raw, server_hostname=name) as secured:
            cipher = secured.cipher()
            return str(secured.version()), cipher[0] if cipher else "?"


def would_verify(address: str, port: int, name: str | None, timeout: float) -> str:
    """Whether the certificate verifies against the system's CAs, with the host name."""
    try:
        handshake(address, port, ssl.create_default_context(), name, timeout)
    except ssl.SSLCertVerificationError as exc:
        return f"does not verify ({exc.verify_message})"
    except (NoTls, ssl.SSLError, OSError, ValueError) as exc:
        return f"could not be tried ({exc})"
    return "verifies (with the host name)"


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _how_verified(plan: ConnectionPlan, context: ssl.SSLContext, name: str | None) -> str:
    # The file the drivers verify with: named in the URL, or libpq's ~/.postgresql/root.crt.
    root = plan.tls_files.get("sslrootcert")
    against = "the system CAs" if root in (None, "system") else str(root)
    if context.check_hostname:
        return f"chain to {against} and host name {name}"
    return f"chain to {against}, not the host name (sslmode={plan.sslmode})"


def _verify_fix(exc: ssl.SSLCertVerificationError) -> str:
    if "hostname" in str(exc.verify_message).lower() or "ip address" in str(exc).lower():
        return (
            "connect by the host name the certificate names (Neon's: the ep-… host, never an "
            "IP address), or set DATABASE_SSLMODE=verify-ca to check the chain only"
        )
    return (
        "sslrootcert in DATABASE_URL must name the CA that signed the server's certificate "
        "(for Neon: sslrootcert=system, or /etc/ssl/certs/ca-certificates.crt)"
    )
