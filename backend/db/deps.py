"""Request-time dependencies: a route's session, or anything else its app's container provides.

One lookup serves every idiom:
- the aliases (`SessionDep`, `AsyncSessionDep`, `ReadSessionDep`, `AsyncReadSessionDep`) and
  `provide(Container.x)`, the same for your own providers;
- `get_session` / `get_async_session`, which need no setup at all;
- dependency-injector's own `Provide[...]` and `Closing[Provide[...]]` in an app's routes, which
  become `ProvideOnLoop` and `ClosingOnLoop` when the app starts (backend/wiring.py).

Each finds its app's container with `app_container()`: the one the request scope carries
(install() chose it when the app was made), else the default container. Each runs on the
event loop: FastAPI would run a sync dependency in its threadpool, a round trip per request
for nothing, and a request is admitted to sync sessions on the loop, before anything of it
takes a worker (backend/db/sessions/scope.py says why).
"""

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar, cast

import anyio
from dependency_injector import providers
from dependency_injector.wiring import Closing, Provide
from fastapi import Depends
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.container import AsyncRequestSession, Container, RequestSession
from backend.db.sessions.admission import acquire_admission, admission_gate
from backend.db.sessions.closing import close_or_invalidate
from backend.db.sessions.scope import (
    NOT_INSTALLED,
    OutsideRequestError,
    RequestScope,
    current_scope,
)

T = TypeVar("T")
S = TypeVar("S", Session, AsyncSession)
# What resolving a provider makes: the request's Session ("sync", which takes an admission),
# its AsyncSession ("async"), or neither ("").
SessionKind = Literal["sync", "async", ""]

_default: list[Container] = []  # at most one: the container of apps that chose none


def default_container() -> Container:
    """The container of an app that chose none, and of `backend.db.session`'s names: a
    `Container()` made on first use, from the environment of that moment."""
    if not _default:
        _default.append(Container())
    return _default[0]


def use_container(container: Container) -> None:
    """Make `container` the default one (install() makes it the running app's)."""
    _default[:] = [container]


def forget_default_container() -> None:
    """The next use makes a new default Container(), from the environment of that moment."""
    _default.clear()


def app_container() -> Container:
    """The container of the app serving the current request: the one its scope carries (the
    app's, chosen when install() made it), else the default one (an app without the layer)."""
    scope = current_scope()
    container = scope.container if scope is not None else None
    # The scope holds it untyped: backend/db/sessions/ sits below the container.
    return cast(Container, container) if container is not None else default_container()


def session_kind(provider: providers.Provider[Any]) -> SessionKind:
    """What of a request's sessions resolving `provider` makes: it is one, or is built on one."""
    candidates = [provider, *provider.traverse()]
    if any(isinstance(candidate, RequestSession) for candidate in candidates):
        return "sync"
    return "async" if any(isinstance(c, AsyncRequestSession) for c in candidates) else ""


async def _value(
    provider: providers.Provider[Any], kind: SessionKind, scope: RequestScope | None
) -> Any:
    if kind:
        if scope is None:
            raise OutsideRequestError(NOT_INSTALLED)
        if kind == "sync":
            await scope.admit()
    value = provider()
    return await value if inspect.isawaitable(value) else value


def provider_of(container: Container, provider: providers.Provider[Any] | str) -> Any:
    """`container`'s own provider for `provider`, a provider of its class (or its name).

    A container made from its class holds copies of the class's providers, under the same
    names; dependency-injector keeps no other link from a copy to its original. So the name is
    the link: an index of each container class's providers by identity, built once."""
    if isinstance(provider, str):
        return getattr(container, provider, None)
    parent = getattr(container, "declarative_parent", None)
    if parent is None:  # a container made without a class: its providers are the originals
        return provider if any(p is provider for p in container.providers.values()) else None
    names = _names.get(parent)
    if names is None:
        names = _names[parent] = _names_of(parent)
    name = names.get(id(provider))
    return getattr(container, name) if name is not None else None


_names: dict[type, dict[int, str]] = {}


def _names_of(container_class: type) -> dict[int, str]:
    # Each class's own providers (`cls_providers`), the base classes' first: a provider a
    # subclass redeclares is then found under its name whether asked for by the base class's
    # provider or the subclass's.
    names: dict[int, str] = {}
    for cls in reversed(container_class.__mro__):
        for name, provider in getattr(cls, "cls_providers", {}).items():
            names[id(provider)] = name
    return names


def _class_name(container: Any) -> str:
    return getattr(getattr(container, "declarative_parent", None), "__name__", "a DynamicContainer")


# dependency-injector's type stubs declare Provide and Closing as protocol instances; at run
# time they are classes, which these subclass so that @inject and wire() take them for their
# own markers (an @inject over a route whose only dependencies are the aliases would otherwise
# warn, for every route, that it is not needed). Subclassed through Any for that reason only.
_Provide: Any = Provide
_Closing: Any = Closing


class ProvideOnLoop(_Provide):  # type: ignore[misc]
    """`provide(X)`: X's value from the request's app container, resolved on the event loop,
    the request admitted first when X makes a sync request session.

    FastAPI gets the value itself, which @inject, if the route has it, passes on unchanged.
    install() turns your routes' own `Provide[...]` markers that reach a request session into
    these when the app starts (backend/wiring.py)."""

    provider: Any

    async def __call__(self) -> Any:
        return await _resolve(self, self.provider)


class ClosingOnLoop(ProvideOnLoop, _Closing):  # type: ignore[misc]
    """`Closing[Provide[X]]`, resolved as ProvideOnLoop resolves the marker it wraps."""

    async def __call__(self) -> Any:
        return await _resolve(self, self.provider.provider)


def provide(provider: providers.Provider[T]) -> Callable[[], Awaitable[T]]:
    """`Depends(provide(Container.x))`: the value of `x` from the request's app container.

    For your own providers (`Annotated[NotesService, Depends(provide(AppContainer.notes))]`),
    as the aliases are for the sessions: no @inject and no wiring needed; resolved on the event
    loop, the request admitted first when it makes a sync request session."""
    dependency: Callable[[], Awaitable[T]] = ProvideOnLoop(provider)
    return dependency


async def _resolve(marker: ProvideOnLoop, provider: Any) -> Any:
    scope = current_scope()
    container = app_container()
    own = provider_of(container, provider)
    if own is None:
        raise LookupError(
            f"{marker!r}: the app's container ({_class_name(container)}) has no such "
            "provider: install() the app with a container of the class that declares it"
        )
    kind: SessionKind | None = marker.__dict__.get("_kind")
    if kind is None:
        kind = marker.__dict__["_kind"] = session_kind(own)
    return await _value(own, kind, scope)


# The route idioms: the request's session of that kind. No @inject needed.
SessionDep = Annotated[Session, Depends(provide(Container.session))]
AsyncSessionDep = Annotated[AsyncSession, Depends(provide(Container.async_session))]
ReadSessionDep = Annotated[Session, Depends(provide(Container.read_session))]
AsyncReadSessionDep = Annotated[AsyncSession, Depends(provide(Container.async_read_session))]


async def get_session() -> AsyncIterator[Session]:
    """`session: Session = Depends(get_session)`: a session for this request, on any app.

    In an app with the layer installed it is the request's own session, as SessionDep's
    (shared with every other idiom, closed by the layer after the response). Elsewhere it is
    an ordinary FastAPI yield dependency: one session per request, shared by its
    sub-dependencies through FastAPI's per-request cache, and closed when FastAPI ends the
    dependency, rolling back whatever was not committed. Either way it needs no setup.
    """
    scope = current_scope()
    container = app_container()
    if scope is not None:
        await scope.admit()
        yield container.session()
        return
    # Admitted as the layer's request sessions are (backend/db/sessions/scope.py): FastAPI
    # still needs its threadpool after a sync route, so unadmitted requests waiting for a
    # connection could hold every worker the requests holding connections need.
    gate = admission_gate()
    await acquire_admission(gate, container)
    try:
        async with _closed_after(container.session_maker()()) as session:
            yield session
    finally:
        gate.release()


async def get_async_session() -> AsyncIterator[AsyncSession]:
    """`Depends(get_async_session)`: get_session's AsyncSession twin."""
    scope = current_scope()
    container = app_container()
    if scope is not None:
        yield container.async_session()
        return
    async with _closed_after(container.async_session_maker()()) as session:
        yield session


@asynccontextmanager
async def _closed_after(session: S) -> AsyncIterator[S]:
    """`session`, closed after the block (rolled back unless committed), even when cancelled."""
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):  # a deadline over the app must not skip it
            await close_or_invalidate(session)
