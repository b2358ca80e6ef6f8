"""What was set: config files and the ${VARIABLE:default} placeholders in them, resolved from
the environment as the exact strings that were set."""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from backend.settings.errors import ConfigurationError

PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<default>.*))?\}", re.S)


MAPPING = "must be a mapping of settings (name: value lines indented under it)"


def kind_of(value: object) -> str:
    """A YAML value's kind, for messages: never the value, which may hold a password."""
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return kinds.get(type(value), type(value).__name__)


def resolve(value: Any, environ: Mapping[str, str]) -> Any:
    """`${NAME:default}`: the variable's exact string when set and not empty (an empty one
    counts as unset, as in docker-compose's `X: ${X}`), else the default; '' is no value."""
    match = PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return value
    resolved = utf8(match["name"], environ.get(match["name"])) or match["default"] or ""
    return resolved if resolved != "" else None


def utf8(name: str, value: str | None) -> str | None:
    """A variable's value, refused if it holds bytes that are not UTF-8.

    Python keeps such a byte as a lone surrogate, which no driver, URL or log line can encode:
    it would fail later, as a traceback, wherever the value is first written out.
    """
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"{name} holds a byte that is not UTF-8 text: set it as UTF-8 (in a URL, "
                "percent-encode such a byte, e.g. %FF)"
            ) from None
    return value


def read_config_file(own: str | Path) -> dict[str, Any]:
    """A service's own YAML, checked for the shape config.yml has before it is merged over the
    defaults: a list or a string where a mapping belongs would fail later, as a traceback."""
    where = f"BACKEND_CONFIG / config_file {own}"
    try:
        # Read here, not by from_yaml: its text is decoded as UTF-8 whatever the locale, and a
        # file that is not would otherwise end in a UnicodeDecodeError.
        text = Path(own).read_bytes().decode("utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text: save it as UTF-8") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{where} cannot be read as YAML: {type(exc).__name__}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where}: the file {MAPPING}, got {kind_of(data)}")
    database = data.get("database")
    if database is not None and not isinstance(database, dict):
        raise ConfigurationError(f"{where}: `database` {MAPPING}, got {kind_of(database)}")
    defaults = (database or {}).get("url_query_defaults")
    if defaults is not None and not isinstance(defaults, dict):
        raise ConfigurationError(
            f"{where}: `database.url_query_defaults` {MAPPING}, got {kind_of(defaults)}"
        )
    return data
