"""`from backend.container import Container, SessionDep`: the spelling of earlier releases.

Kept working for the apps that use it. The container is defined in backend/db/container.py,
the aliases and `provide()` in backend/db/deps.py; `from backend import ...` is the public
spelling of all of them.
"""

from backend.db.container import Container, use_database
from backend.db.deps import (
    AsyncReadSessionDep,
    AsyncSessionDep,
    ProvideOnLoop,
    ReadSessionDep,
    SessionDep,
    provide,
)

__all__ = [
    "AsyncReadSessionDep",
    "AsyncSessionDep",
    "Container",
    "ProvideOnLoop",
    "ReadSessionDep",
    "SessionDep",
    "provide",
    "use_database",
]
