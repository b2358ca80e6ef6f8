"""The errors a setting gives: one sentence that names the setting, never a secret."""


class ConfigurationError(ValueError):
    """A setting is missing or invalid. The message names the setting and never holds a secret."""


class MissingDriver(ConfigurationError):
    """An engine was asked for where its driver, an extra, is not installed."""

    def __init__(self, engine: str = "async", driver: str = "asyncpg") -> None:
        super().__init__(
            f"the {engine} engine needs {_NAMES.get(driver, driver)}, which is not installed: "
            f"pip install 'fastapi-sqlmodel-neon[{driver}]'"
        )


class NoDirectEndpoint(ConfigurationError):
    """The direct endpoint was asked for where none is known: DATABASE_URL is a pooler whose
    direct host no rule gives, and no direct URL was set."""


_NAMES = {"psycopg": "psycopg 3 (psycopg)"}
