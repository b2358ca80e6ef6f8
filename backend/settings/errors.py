"""The errors a setting gives: one sentence that names the setting, never a secret."""


class ConfigurationError(ValueError):
    """A setting is missing or invalid. The message names the setting and never holds a secret."""


class MissingDriver(ConfigurationError):
    """The async path was asked for where its driver is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "the async engine needs asyncpg, which is not installed: "
            "pip install 'fastapi-sqlmodel-neon[asyncpg]'"
        )
