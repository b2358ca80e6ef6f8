"""The async path's URL: libpq's words translated for asyncpg, Neon's pooler made safe."""

import logging
import ssl
from pathlib import Path

import pytest
import trustme

from backend.db.connection.url import DriverArgs
from backend.settings import ConfigurationError
from tests.unit.test_settings import NEON, SECRET, make_container
from tests.unit.test_url import NEON_POOLER


def target_for(monkeypatch: pytest.MonkeyPatch, url: str, **env: str) -> DriverArgs:
    return make_container(monkeypatch, url, **env).connection_plan().async_driver


def test_the_url_keeps_no_libpq_word(monkeypatch: pytest.MonkeyPatch) -> None:
    target = target_for(
        monkeypatch, NEON + "?sslmode=require&channel_binding=require&connect_timeout=15"
    )
    assert target.url.drivername == "postgresql+asyncpg"
    assert dict(target.url.query) == {}
    assert (target.url.host, target.url.password) == (
        "ep-cool-darkness-123456.us-east-2.aws.neon.tech",
        SECRET,
    )
    assert target.connect_args["timeout"] == 15.0
    assert target.dropped == ("channel_binding",)


@pytest.mark.parametrize(
    ("url", "ssl_argument"),
    [
        (NEON, "require"),
        (NEON + "?sslmode=require", "require"),
        ("postgresql://u:p@127.0.0.1/db", "prefer"),
        ("postgresql://u:p@127.0.0.1/db?sslmode=allow", "allow"),
        ("postgresql://u:p@127.0.0.1/db?sslmode=disable", False),
    ],
)
def test_libpq_sslmodes_that_asyncpg_takes_as_words(
    monkeypatch: pytest.MonkeyPatch, url: str, ssl_argument: object
) -> None:
    assert target_for(monkeypatch, url).connect_args["ssl"] == ssl_argument


def test_verify_full_checks_chain_and_name(monkeypatch: pytest.MonkeyPatch) -> None:
    context = target_for(monkeypatch, NEON + "?sslmode=verify-full").connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_verify_ca_checks_the_chain_only(monkeypatch: pytest.MonkeyPatch) -> None:
    context = target_for(monkeypatch, NEON + "?sslmode=verify-ca").connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca", "require"])
def test_sslrootcert_becomes_the_contexts_only_authority(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sslmode: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    url = f"{NEON}?sslmode={sslmode}&sslrootcert={ca_file}"
    context = target_for(monkeypatch, url).connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == 1
    # libpq: with a root certificate, require verifies the chain like verify-ca.
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is (sslmode == "verify-full")


def test_sslrootcert_system_means_the_platform_store(monkeypatch: pytest.MonkeyPatch) -> None:
    url = NEON + "?sslmode=verify-full&sslrootcert=system"
    context = target_for(monkeypatch, url).connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True


def test_an_unreadable_root_certificate_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by the adversarial pass (issue 9): the message said "No such file or directory:
    # None", naming neither the file nor the parameter.
    message = "^sslrootcert in DATABASE_URL names /nonexistent/ca.pem, which cannot be read"
    with pytest.raises(ConfigurationError, match=message):
        target_for(monkeypatch, NEON + "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")


def test_plaintext_to_a_remote_host_is_refused_here_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_ALLOW_INSECURE"):
        target_for(monkeypatch, NEON + "?sslmode=disable")


def test_a_direct_host_gets_application_name_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    url = NEON + "?options=-c%20statement_timeout%3D5000"
    target = target_for(monkeypatch, url, DATABASE_APPLICATION_NAME="billing")
    assert target.connect_args["server_settings"] == {
        "application_name": "billing",
        "options": "-c statement_timeout=5000",
    }
    assert "statement_cache_size" not in target.connect_args


def test_the_pooler_gets_no_prepared_statements_and_no_server_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = target_for(monkeypatch, NEON_POOLER).connect_args
    assert args["statement_cache_size"] == 0
    assert args["prepared_statement_cache_size"] == 0
    assert "server_settings" not in args


def test_startup_settings_for_the_pooler_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="unsupported startup parameter"):
        target_for(monkeypatch, NEON_POOLER + "?options=-c%20jit%3Doff")


def test_asyncpg_parameters_pass_typed_and_leave_the_sync_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = NEON + "?command_timeout=30&statement_cache_size=50&target_session_attrs=read-write"
    container = make_container(monkeypatch, url)
    args = container.connection_plan().async_driver.connect_args
    assert (args["command_timeout"], args["statement_cache_size"]) == (30.0, 50)
    assert args["target_session_attrs"] == "read-write"
    sync_query = container.engine().url.query
    assert "command_timeout" not in sync_query
    assert "statement_cache_size" not in sync_query
    assert sync_query["target_session_attrs"] == "read-write"  # libpq knows this one


def test_a_bad_asyncpg_parameter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"^command_timeout in DATABASE_URL must be a"):
        target_for(monkeypatch, NEON + "?command_timeout=soon")


def test_what_asyncpg_cannot_do_is_logged_once_without_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    container = make_container(monkeypatch, NEON + "?channel_binding=require&gssencmode=disable")
    container.async_engine()
    container.async_engine()
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "channel_binding is not enforced" in m]) == 1
    assert len([m for m in messages if "gssencmode" in m]) == 1
    assert SECRET not in caplog.text


def test_the_async_engine_has_the_same_pool_options(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_container(
        monkeypatch, NEON, DATABASE_POOL_SIZE="4", DATABASE_POOL_RECYCLE="60"
    ).async_engine()
    pool = engine.pool
    assert (pool.size(), pool._recycle) == (4, 60)  # type: ignore[attr-defined]
    assert len(pool.dispatch.checkout) == 1  # the idle-aware ping, as on the sync engine
    assert engine.sync_engine.hide_parameters is True
    assert SECRET not in repr(engine)
