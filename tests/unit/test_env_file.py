""".env: the settings read it under the process environment, with the same checks and the same
secret rules as any variable."""

from pathlib import Path

import pytest

from backend import Container
from backend.settings import ConfigurationError

NEON = "postgresql://alex:AbC123dEf@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
SECRET = "AbC123dEf"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A service's folder, the working directory (the suite's conftest leaves no DATABASE_*,
    PG* or BACKEND_* variable set)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_env_file_in_the_working_directory_is_read(project: Path) -> None:
    (project / ".env").write_text(f"# from the Neon console\nDATABASE_URL='{NEON}'\n")
    settings = Container().settings()
    assert settings.url.host == "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
    assert settings.url.password == SECRET
    assert SECRET not in repr(settings)


def test_the_process_environment_wins_over_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text(f"DATABASE_URL={NEON}\nDATABASE_POOL_SIZE=7\n")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    settings = Container().settings()
    assert settings.pool_size == 3
    assert settings.url.database == "neondb"


def test_an_empty_variable_in_the_process_does_not_hide_the_files(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text(f"DATABASE_URL={NEON}\n")
    monkeypatch.setenv("DATABASE_URL", "")
    assert Container().settings().url.database == "neondb"


def test_backend_env_file_names_another_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text("DATABASE_POOL_SIZE=2\n")
    (project / "production.env").write_text(f"DATABASE_URL={NEON}\nDATABASE_POOL_SIZE=9\n")
    monkeypatch.setenv("BACKEND_ENV_FILE", str(project / "production.env"))
    assert Container().settings().pool_size == 9


def test_a_named_file_that_is_missing_is_refused_by_name(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKEND_ENV_FILE", "deploy/.env.production")
    with pytest.raises(ConfigurationError, match=r"BACKEND_ENV_FILE \(deploy/.env.production\)"):
        Container().settings()


def test_without_a_file_nothing_changes(project: Path) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        Container().settings()


def test_a_malformed_line_is_refused_naming_the_line_and_never_its_text(project: Path) -> None:
    (project / ".env").write_text(
        f'DATABASE_POOL_SIZE=4\nDATABASE_URL="{NEON}\nDATABASE_ECHO=false\n'  # quote left open
    )
    with pytest.raises(ConfigurationError) as refused:
        Container().settings()
    message = str(refused.value)
    assert "line 2" in message
    assert ".env" in message
    assert SECRET not in message


def test_a_bad_value_from_the_file_names_its_variable(project: Path) -> None:
    (project / ".env").write_text(f"DATABASE_URL={NEON}\nDATABASE_POOL_SIZE=lots\n")
    with pytest.raises(ConfigurationError, match="DATABASE_POOL_SIZE must be an integer >= 1"):
        Container().settings()


def test_a_bad_url_from_the_file_never_shows_its_password(project: Path) -> None:
    (project / ".env").write_text(f"DATABASE_URL=mysql://alex:{SECRET}@db.example.com/app\n")
    with pytest.raises(ConfigurationError) as refused:
        Container().connection_plan()
    assert "DATABASE_URL" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_tls_rule_holds_for_a_url_from_the_file(project: Path) -> None:
    (project / ".env").write_text(f"DATABASE_URL={NEON}?sslmode=disable\n")
    with pytest.raises(ConfigurationError, match="sslmode=disable"):
        Container().connection_plan()


def test_libpq_variables_in_the_file_count_as_they_would_in_the_process(project: Path) -> None:
    # Neon's console offers the connection as PG* variables too; the drivers read PGPASSWORD
    # from the process only, so the layer passes the file's on.
    (project / ".env").write_text(
        "DATABASE_URL=postgresql://\n"
        "PGHOST='ep-cool-darkness-123456.us-east-2.aws.neon.tech'\n"
        "PGDATABASE='neondb'\nPGUSER='alex'\n"
        f"PGPASSWORD='{SECRET}'\nPGSSLMODE='require'\n"
    )
    plan = Container().connection_plan()
    assert [endpoint.host for endpoint in plan.target.endpoints] == [
        "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
    ]
    assert (plan.target.user, plan.target.database, plan.sslmode) == ("alex", "neondb", "require")
    assert plan.settings.url.password == SECRET
    assert SECRET not in plan.settings.url.render_as_string(hide_password=True)


def test_values_are_taken_as_written(project: Path) -> None:
    # No ${...} expansion: a password may hold a $.
    password = "pa$word${HOME}"
    (project / ".env").write_text(
        f"DATABASE_URL='postgresql://alex:{password.replace('$', '%24')}@db.example.com/app'\n"
        "DATABASE_APPLICATION_NAME='shop ${HOME}' # a comment\n"
    )
    settings = Container().settings()
    assert settings.url.password == password
    assert settings.application_name == "shop ${HOME}"


def test_backend_config_may_come_from_the_file(project: Path) -> None:
    (project / "service.yml").write_text("database:\n  pool_size: 6\n")
    (project / ".env").write_text(f"DATABASE_URL={NEON}\nBACKEND_CONFIG=service.yml\n")
    assert Container().settings().pool_size == 6
