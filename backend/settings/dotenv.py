"""`.env`: the layer's variables from a file, under the process environment.

Neon's quickstarts and the full-stack FastAPI template keep the connection string in `.env`.
The file is the working directory's `.env`, or the one BACKEND_ENV_FILE names. A variable set
(and not empty) in the process wins over the file's; nothing is written into os.environ, so
the file changes only what the layer reads, and the settings give its values the same checks
and the same secret rules as any variable's.
"""

import io
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from backend.settings.errors import ConfigurationError

ENV_FILE = "BACKEND_ENV_FILE"


def with_env_file(environ: Mapping[str, str]) -> Mapping[str, str]:
    """`environ`'s variables over those of the .env file (none when there is no file).

    An empty variable counts as unset, as it does in config.yml's placeholders, so an
    `export DATABASE_URL=` left in a shell does not hide the file's URL.
    """
    named = environ.get(ENV_FILE) or None
    path = Path(named or ".env")
    where = f"{ENV_FILE} ({named})" if named else f".env in {Path.cwd()}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise ConfigurationError(f"{where}: no such file") from None
        return environ
    except OSError as error:
        raise ConfigurationError(f"{where} cannot be read: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text: save it as UTF-8") from None
    # dotenv_values skips a line it cannot parse with only a log line, and a variable would
    # silently fall back to its default. python-dotenv's parser is the one place that says
    # which line: the error names it, never its text (it may hold a password).
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigurationError(
                f"{where}: line {binding.original.line} is not NAME=value (is a quote left "
                "open?): correct or remove it"
            )
    # Taken as written (quotes and comments removed, no ${...} expansion): a password may
    # hold a $, and config.yml's values are the exact strings that were set, too.
    written = dotenv_values(stream=io.StringIO(text), interpolate=False)
    merged = {name: value for name, value in written.items() if value}
    merged.update({name: value for name, value in environ.items() if value})
    return merged
