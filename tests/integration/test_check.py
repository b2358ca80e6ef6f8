"""`python -m backend check` against the stand-in: passes on each healthy endpoint, and says
the right ✘, with the setting to change, for each way a service's database settings go wrong."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from backend.embedded import PostgresServer, has_tls
from backend.embedded.files import read_as_owner
from backend.testing.drivers import async_driver, with_run_driver
from backend.testing.postgres import Certificates, TestServer, choose_bindir
from tests.conftest import project_root


class Checked:
    """What one `python -m backend check` said, in text and in JSON."""

    def __init__(
        self, text: subprocess.CompletedProcess[str], machine: subprocess.CompletedProcess[str]
    ):
        self.code = text.returncode
        self.text = text.stdout + text.stderr
        self.json_code = machine.returncode
        self.document: dict[str, Any] = json.loads(machine.stdout)

    def steps(self, name: str) -> list[dict[str, Any]]:
        return [step for step in self.document["steps"] if step["name"] == name]

    def step(self, name: str) -> dict[str, Any]:
        (found,) = self.steps(name)
        return found

    def failed(self) -> list[str]:
        return [step["name"] for step in self.document["steps"] if step["status"] == "fail"]

    def line(self, mark: str, name: str) -> str:
        """The text line of step `name` with `mark` (✔ ⚠ ✘ -), and its fix line if any."""
        match = re.search(rf"^{mark} {re.escape(name)} .*(\n +fix: .*)?", self.text, re.M)
        assert match, self.text
        return match.group(0)


def environment(url: URL | None, settings: dict[str, str]) -> dict[str, str]:
    ours = ("DATABASE_", "PG", "BACKEND_CONFIG", "WEB_CONCURRENCY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    if url is not None:
        if url.drivername == "postgresql":  # the run's drivers (BACKEND_TEST_DRIVER)
            url = with_run_driver(url)
            settings = {"async_driver": async_driver(), **settings}
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    env |= {f"DATABASE_{name.upper()}": value for name, value in settings.items()}
    return env


def check(url: URL | None, *arguments: str, **settings: str) -> Checked:
    """`python -m backend check ARGUMENTS`, then the same with --json, with DATABASE_URL=url
    and DATABASE_* settings by short name; neither says the password."""
    runs = [
        subprocess.run(
            [sys.executable, "-m", "backend", "check", *arguments, *extra],
            cwd=project_root(),
            env=environment(url, settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for extra in ((), ("--json",))
    ]
    if url is not None and url.password:
        for run in runs:
            assert str(url.password) not in run.stdout + run.stderr
    return Checked(*runs)


def assert_healthy(checked: Checked) -> None:
    assert checked.code == checked.json_code == 0, checked.text
    assert checked.document["ok"] is True
    assert checked.failed() == []
    assert "Traceback" not in checked.text
    names = [step["name"] for step in checked.document["steps"]]
    assert names == [
        "settings", "dns", "tcp", "tls", "authentication", "async path", "server", "pooler",
        "round trip", "connections", "statement_timeout", "idle_in_transaction",
    ]  # fmt: skip
    tls = checked.step("tls")
    assert tls["facts"]["verified"] is True
    assert tls["facts"]["protocol"].startswith("TLSv1.")
    assert checked.step("round trip")["facts"]["pings"] == 20
    assert checked.text.rstrip().endswith("nothing failed (2 warnings)")


def on_psycopg(url: URL) -> tuple[URL, dict[str, str]]:
    """`url` and the settings for psycopg 3 on both engines, whatever the run's drivers."""
    return url.set(drivername="postgresql+psycopg"), {"async_driver": "psycopg"}


@pytest.mark.parametrize("drivers", ["run's", "psycopg"])
def test_check_passes_on_the_direct_host(database_url: URL, drivers: str) -> None:
    url, settings = on_psycopg(database_url) if drivers == "psycopg" else (database_url, {})
    checked = check(url, **settings)
    assert_healthy(checked)
    if drivers == "psycopg":
        assert "(psycopg, libpq)" in checked.step("authentication")["detail"]
        assert "drivers psycopg (sync) and psycopg (async)" in checked.step("settings")["detail"]
        assert checked.step("async path")["detail"] == "psycopg connects and answers"
    assert checked.step("pooler")["facts"] == {"detected": "none", "layer_says": "direct"}
    budget = checked.step("connections")["facts"]
    # One worker, four engines of 5 + 5: the most this app can open.
    assert (budget["budget"], budget["workers"], budget["per_engine"]) == (40, 1, [10] * 4)
    assert budget["max_connections"] == 300
    assert "✔ connections" in checked.text
    assert "40: 1 worker x (10 + 10 + 10 + 10)" in checked.line("✔", "connections")


def test_check_passes_through_the_tls_front(front_url: URL) -> None:
    # Neon's proxy passes the startup packet on: a direct host, not a pooler.
    checked = check(front_url)
    assert_healthy(checked)
    assert checked.step("pooler")["facts"]["detected"] == "none"


@pytest.mark.parametrize("drivers", ["run's", "psycopg"])
def test_check_passes_on_the_pooler_the_layer_knows(pooler_url: URL, drivers: str) -> None:
    url, settings = on_psycopg(pooler_url) if drivers == "psycopg" else (pooler_url, {})
    checked = check(url, pooler="pgbouncer", **settings)
    assert_healthy(checked)
    assert checked.step("pooler")["facts"] == {"detected": "pgbouncer", "layer_says": "pooler"}
    assert "client connections to the pooler" in checked.step("connections")["detail"]


def test_check_checks_the_direct_endpoint_beside_the_pooler(
    pooler_url: URL, database_url: URL
) -> None:
    direct = with_run_driver(database_url).render_as_string(hide_password=False)
    checked = check(pooler_url, pooler="pgbouncer", direct_url=direct)
    assert checked.code == checked.json_code == 0, checked.text
    steps = {step["name"]: step for step in checked.document["direct"]["steps"]}
    assert list(steps) == ["settings", "dns", "tcp", "tls", "authentication", "server", "pooler"]
    assert all(step["status"] == "pass" for step in steps.values()), steps
    assert "from DATABASE_DIRECT_URL" in steps["settings"]["detail"]
    assert steps["pooler"]["detail"].startswith("direct: the server applied a startup parameter")
    assert "direct endpoint: ✔ nothing failed" in checked.text


def test_check_fails_a_direct_endpoint_that_is_a_pooler(pooler_url: URL) -> None:
    pooled = with_run_driver(pooler_url).render_as_string(hide_password=False)
    checked = check(pooler_url, pooler="pgbouncer", direct_url=pooled)
    assert checked.code == checked.json_code == 1, checked.text
    assert checked.failed() == []  # the primary is as the layer takes it: a pooler
    (pooler,) = [s for s in checked.document["direct"]["steps"] if s["name"] == "pooler"]
    assert pooler["status"] == "fail"
    assert pooler["fix"] == "give the server's own URL in DATABASE_DIRECT_URL"
    assert "direct endpoint: ✘ 1 check failed" in checked.text


def test_a_pooler_the_layer_takes_for_a_direct_host(pooler_url: URL) -> None:
    checked = check(pooler_url)
    assert checked.code == checked.json_code == 1
    # asyncpg's first statements may or may not meet the server connection that prepared them.
    assert checked.failed() in (["pooler"], ["async path", "pooler"])
    if "async path" in checked.failed():
        assert "set DATABASE_POOLER=pgbouncer" in checked.step("async path")["fix"]
    assert checked.step("pooler")["facts"] == {"detected": "pgbouncer", "layer_says": "direct"}
    assert "fix: set DATABASE_POOLER=pgbouncer" in checked.line("✘", "pooler")


@pytest.mark.parametrize("endpoint", ["direct", "front"])
def test_plaintext_refused(endpoint: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue({"direct": "database_url", "front": "front_url"}[endpoint])
    checked = check(url.update_query_dict({"sslmode": "disable"}))
    assert checked.code == checked.json_code == 1
    assert checked.step("tls")["status"] == "skip"  # plaintext was asked for: none negotiated
    authentication = checked.step("authentication")
    assert authentication["status"] == "fail"
    assert authentication["facts"]["kind"] == "misconfigured"
    # PostgreSQL's words, or the TLS front's where the front is the direct endpoint (a build
    # without OpenSSL, as CI's embedded-build pass runs).
    said = {"direct": ("no encryption", "connection is insecure"), "front": ("insecure",)}
    assert any(words in authentication["detail"] for words in said[endpoint])
    assert "fix: the server takes TLS connections only: set DATABASE_SSLMODE=require" in (
        checked.line("✘", "authentication")
    )
    assert {step["status"] for step in checked.document["steps"][-7:]} == {"skip"}


def test_a_certificate_from_another_ca(database_url: URL, tmp_path: Path) -> None:
    other = Certificates(tmp_path)  # a CA that signed nothing the server has
    checked = check(database_url.update_query_dict({"sslrootcert": str(other.ca_file)}))
    assert checked.code == checked.json_code == 1
    tls = checked.step("tls")
    assert tls["status"] == "fail"
    assert tls["facts"]["why"] == "unable to get local issuer certificate"
    assert "sslrootcert in DATABASE_URL must name the CA" in checked.line("✘", "tls")
    assert checked.step("authentication")["status"] == "fail"  # libpq agrees


def test_a_host_name_the_certificate_does_not_name(database_url: URL) -> None:
    # hostaddr: connect to the loopback address, and verify the certificate for this name.
    url = database_url.set(host="ep-elsewhere-123456.invalid")
    url = url.update_query_dict({"hostaddr": "127.0.0.1"})
    checked = check(url)
    assert checked.code == checked.json_code == 1
    tls = checked.step("tls")
    assert "Hostname mismatch" in tls["facts"]["why"]
    assert "connect by the host name the certificate names" in tls["fix"]


def test_a_certificate_not_checked_says_so_and_why(database_url: URL) -> None:
    checked = check(database_url.difference_update_query(["sslrootcert"]).update_query_dict(
        {"sslmode": "require"}
    ))  # fmt: skip
    assert checked.code == 0, checked.text
    tls = checked.step("tls")
    assert tls["facts"]["verified"] is False
    assert tls["facts"]["why"] == "sslmode=require encrypts without checking the certificate"
    assert tls["facts"]["system_cas"] == (
        "does not verify (unable to get local issuer certificate)"
    )
    assert tls["status"] == "pass"  # a loopback host; a remote one is a warning


@pytest.mark.parametrize("drivers", ["run's", "psycopg"])
def test_wrong_password(postgres: TestServer, database_name: str, drivers: str) -> None:
    url = postgres.url(database_name).set(password="not-the-password")
    url, settings = on_psycopg(url) if drivers == "psycopg" else (url, {})
    checked = check(url, **settings)
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["authentication"]
    authentication = checked.step("authentication")
    assert "password authentication failed" in authentication["detail"]
    assert authentication["facts"]["kind"] == "misconfigured"
    assert "user name or password in DATABASE_URL is wrong" in authentication["fix"]
    assert "not-the-password" not in checked.text + json.dumps(checked.document)


@pytest.mark.parametrize("drivers", ["run's", "psycopg"])
def test_unknown_database(postgres: TestServer, drivers: str) -> None:
    url = postgres.url("no_such_database")
    url, settings = on_psycopg(url) if drivers == "psycopg" else (url, {})
    checked = check(url, **settings)
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["authentication"]
    authentication = checked.step("authentication")
    assert 'database "no_such_database" does not exist' in authentication["detail"]
    assert "the database named in DATABASE_URL does not exist" in authentication["fix"]


def test_unknown_host(database_url: URL) -> None:
    # .invalid never resolves (RFC 6761): nothing is ever sent anywhere.
    checked = check(database_url.set(host="ep-no-such-endpoint-123456.invalid"))
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["dns"]
    assert checked.step("dns")["facts"] == {"host": "ep-no-such-endpoint-123456.invalid"}
    assert "fix: check the host name (host in DATABASE_URL)" in checked.line("✘", "dns")
    skipped = [step["name"] for step in checked.document["steps"] if step["status"] == "skip"]
    assert skipped == ["authentication", "async path", "server", "pooler", "round trip",
                       "connections", "statement_timeout", "idle_in_transaction"]  # fmt: skip


def test_unreachable_port(database_url: URL) -> None:
    checked = check(database_url.set(port=1))  # nothing listens on port 1
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["tcp"]
    assert checked.step("tcp")["facts"] == {
        "address": "127.0.0.1:1",
        "error": "Connection refused",
        "host": "127.0.0.1",
    }
    assert "fix: check the port in DATABASE_URL" in checked.line("✘", "tcp")


def test_a_host_list_passes_when_one_host_takes_connections(database_url: URL) -> None:
    # libpq tries each host in turn: the first one never resolves (.invalid), the second works.
    hosts = database_url.set(host=None, port=None).update_query_dict(
        {
            "host": "ep-gone-123456.invalid,127.0.0.1",
            "port": f"{database_url.port},{database_url.port}",
        }
    )
    checked = check(hosts)
    assert checked.code == checked.json_code == 0, checked.text
    first, second = checked.steps("dns")
    assert (first["status"], second["status"]) == ("warn", "pass")
    assert first["detail"].startswith("ep-gone-123456.invalid: ep-gone-123456.invalid does not")
    assert checked.step("authentication")["status"] == "pass"


def test_a_host_list_where_no_host_takes_connections(database_url: URL) -> None:
    hosts = database_url.set(host=None, port=None).update_query_dict(
        {"host": "ep-gone-123456.invalid,127.0.0.1", "port": f"{database_url.port},1"}
    )
    checked = check(hosts)
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["hosts"]
    assert [step["status"] for step in checked.steps("dns") + checked.steps("tcp")] == [
        "warn", "pass", "warn",
    ]  # fmt: skip
    assert checked.step("hosts")["detail"] == "none of the 2 hosts takes connections"


def test_startup_options_on_the_pooler_are_a_bad_setting(pooler_url: URL) -> None:
    url = pooler_url.update_query_dict({"options": "-c statement_timeout=5000"})
    checked = check(url, pooler="pgbouncer")
    assert checked.code == checked.json_code == 3
    (line,) = checked.text.splitlines()
    assert line.startswith("python -m backend: options in DATABASE_URL sends `-c …` settings")
    assert checked.document["exit_code"] == 3
    (settings,) = checked.document["steps"]
    assert (settings["name"], settings["status"]) == ("settings", "fail")
    assert "PgBouncer refuses (unsupported startup parameter: options)" in settings["detail"]


def test_startup_options_on_a_pooler_it_does_not_know_of(pooler_url: URL) -> None:
    url = pooler_url.update_query_dict({"options": "-c statement_timeout=5000"})
    checked = check(url)
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["authentication"]
    authentication = checked.step("authentication")
    assert "unsupported startup parameter: options" in authentication["detail"]
    assert "remove options from DATABASE_URL" in authentication["fix"]


@pytest.fixture(scope="module")
def small_server() -> Iterator[PostgresServer]:
    """A server of its own with max_connections = 20 (17 for roles without superuser), that
    logs every statement it runs."""
    if not has_tls(choose_bindir()):
        pytest.skip("this PostgreSQL build has no OpenSSL: the private TLS server needs one")
    root = Path(tempfile.mkdtemp(prefix="backend-test-small-"))
    certificates = Certificates(Path(tempfile.mkdtemp(prefix="backend-test-small-ca-")))
    server = PostgresServer(
        choose_bindir(),
        root,
        tls=(certificates.cert_file, certificates.key_file),
        settings={"fsync": "off", "max_connections": "20", "log_statement": "'all'"},
    )
    server.start()
    server.ca_file = certificates.ca_file  # type: ignore[attr-defined]
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(certificates.ca_file.parent, ignore_errors=True)


def small_url(server: PostgresServer) -> URL:
    ca = str(server.ca_file)  # type: ignore[attr-defined]
    return server.url().update_query_dict({"sslmode": "verify-full", "sslrootcert": ca})


def test_a_budget_over_max_connections(small_server: PostgresServer) -> None:
    checked = check(small_url(small_server), "--workers", "2")
    assert checked.code == checked.json_code == 1
    assert checked.failed() == ["connections"]
    budget = checked.step("connections")["facts"]
    assert (budget["budget"], budget["workers"], budget["per_worker"]) == (80, 2, 40)
    assert (budget["max_connections"], budget["reserved"], budget["available"]) == (20, 3, 17)
    line = checked.line("✘", "connections")
    assert "80: 2 workers x (10 + 10 + 10 + 10)" in line
    assert "the server takes 17 (20 max_connections - 3 reserved)" in line
    assert "fix: lower DATABASE_POOL_SIZE and DATABASE_MAX_OVERFLOW" in line


def test_a_budget_that_fits_once_capped(small_server: PostgresServer) -> None:
    # Only the sync engines, and the read pool capped: 1 x (3 + 1) + 1 x (1 + 1) = 6 of 17.
    checked = check(
        small_url(small_server), "--engines", "engine,read_engine",
        pool_size="2", max_overflow="1", read_pool_size="1", read_max_overflow="1",
    )  # fmt: skip
    assert checked.code == 0, checked.text
    assert checked.step("connections")["facts"]["per_engine"] == [3, 2]


def test_check_never_writes(small_server: PostgresServer) -> None:
    log = small_server.log_file
    before = len(read_as_owner(log) or b"")
    assert check(small_url(small_server)).code == 1  # the budget: 40 of 17
    logged = (read_as_owner(log) or b"")[before:].decode(errors="replace")
    statements = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", logged)
    assert len(statements) > 40  # both runs: the pings, the settings, the drivers' own
    first_words = {statement.split()[0].rstrip(";").upper() for statement in statements}
    # The drivers' own first-connect queries run in a transaction they roll back.
    assert first_words <= {"SELECT", "SHOW", "WITH", "BEGIN", "ROLLBACK"}, first_words


def test_a_bad_setting_is_one_line_and_exit_code_3(database_url: URL) -> None:
    checked = check(database_url, pool_size="ten")
    assert checked.code == 3
    assert checked.text.splitlines() == [
        "python -m backend: DATABASE_POOL_SIZE must be an integer >= 1, got 'ten'"
    ]
    assert checked.document["steps"][0]["detail"] == (
        "DATABASE_POOL_SIZE must be an integer >= 1, got 'ten'"
    )
