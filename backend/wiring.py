"""The dependency-injector markers in an app's routes, looked at once, when the app starts.

- A marker that reaches a request session becomes one that resolves on the event loop from
  the request's app container (`resolve_markers_on_the_loop`).
- A marker nothing would resolve fails startup, named (`check_wiring`). Without this,
  forgetting @inject or the wiring of a route's module shows only at the first request that
  reaches it, as `'Provide' object has no attribute 'exec'`.
"""

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import dependency_injector.wiring
from dependency_injector.wiring import Closing, Provide
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute

from backend.db.deps import ClosingOnLoop, ProvideOnLoop, session_kind

# dependency-injector's stubs present its markers as instances of a protocol; they are classes.
PROVIDE, CLOSING = cast(type, Provide), cast(type, Closing)

if TYPE_CHECKING:
    # FastAPI's undocumented model of a route's dependencies (route.dependant): for the type
    # checker only, so that a move of it breaks no import. Its call, name and dependencies
    # are the same from FastAPI 0.115 to 0.165.
    from fastapi.dependencies.models import Dependant


logger = logging.getLogger("backend")
# dependency-injector keeps no public record of what @inject patched and what wire() bound to
# it: 4.49 sets no attribute on the patched function (functools.wraps' __wrapped__ says only
# that it wraps something) and has no public query. Its registry (PatchedRegistry in
# dependency_injector/wiring.py) is the one place that knows: private, so checked against
# dependency-injector<4.50. Were it gone, routes go unchecked rather than the app not starting.
_patched_registry: Any = getattr(dependency_injector.wiring, "_patched_registry", None)


class WiringError(RuntimeError):
    """A route or dependency takes a marker that nothing would resolve."""


def check_wiring(app: FastAPI, container: Any) -> None:
    """Raise WiringError for the first marker in `app`'s routes that would not resolve from
    `container`."""
    if _patched_registry is None:
        logger.warning(
            "the routes' markers are not checked: this dependency-injector has no "
            "_patched_registry (backend.wiring)"
        )
        return
    own = {id(provider) for provider in container.traverse()}
    for route in _routes(app.routes):
        if isinstance(route, APIRoute | APIWebSocketRoute):
            for function, parameter, marker in _markers(route.dependant):
                problem = _why_unresolved(function, parameter, own)
                if problem:
                    raise WiringError(
                        f"{route.path}: {getattr(function, '__qualname__', function)} takes "
                        f"{parameter}={marker!r} but {problem}"
                    )


def resolve_markers_on_the_loop(app: FastAPI) -> None:
    """Make each `Provide[...]` (or `Closing[Provide[...]]`) in `app`'s routes that reaches a
    request session resolve as the layer's own aliases do (backend/db/deps.py): on the event
    loop, from the request's app container, with the request admitted to sync sessions first.

    FastAPI calls a marker as a sync dependency, in its threadpool; a request session asked
    for from there would be taken by a request that already holds a worker, which is how a
    pool smaller than the threadpool deadlocks (backend/db/sessions/scope.py). The marker keeps
    its provider and its place in dependency-injector's eyes (ProvideOnLoop is a Provide,
    ClosingOnLoop a Closing), and hands FastAPI the session itself, which @inject passes on.
    """
    swapped = False
    for route in _routes(app.routes):
        if isinstance(route, APIRoute | APIWebSocketRoute):
            for _, _, marker in _markers(route.dependant):
                kind, inner = type(marker), getattr(marker, "provider", None)
                if kind is PROVIDE and _reaches_a_session(inner):
                    marker.__class__ = ProvideOnLoop
                    swapped = True
                elif (
                    kind is CLOSING
                    and type(inner) is PROVIDE
                    and _reaches_a_session(getattr(inner, "provider", None))
                ):
                    marker.__class__ = ClosingOnLoop
                    swapped = True
    if swapped:
        _forget_how_fastapi_called_them()


def _forget_how_fastapi_called_them() -> None:
    """FastAPI 0.16x decides once per callable object, for the whole process, whether a
    dependency is sync or async: lru_caches in fastapi/dependencies/models.py, private, with no
    public way to reset them. A marker one app served before another app's layer started (a
    router shared by several apps, as in a test suite) would stay "sync" after its class became
    ProvideOnLoop, and FastAPI would hand the route an unawaited coroutine. Cleared, each marker
    is classified again at its next use. Earlier FastAPI versions decide at each call and have
    no such cache: nothing to clear."""
    from fastapi.dependencies import models

    for name in ("_is_coroutine_callable_cached", "_is_gen_callable_cached",
                 "_is_async_gen_callable_cached"):  # fmt: skip
        cache = getattr(models, name, None)
        if cache is not None:
            cache.cache_clear()


def _reaches_a_session(provider: object) -> bool:
    # A marker may name its provider by a string (`Provide["session"]`): left to the wiring.
    return hasattr(provider, "traverse") and bool(session_kind(provider))  # type: ignore[arg-type]


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    for route in routes:
        # FastAPI 0.16x keeps an included router as one entry (`original_router`); earlier
        # versions copied its routes in; a Mount holds its own.
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None:
            yield from _routes(inner)
        else:
            yield route


def _markers(dependant: "Dependant") -> Iterator[tuple[Any, str, Any]]:
    for dependency in dependant.dependencies:
        marker = dependency.call
        # A ProvideOnLoop resolves itself from the request's app container, wired or not.
        is_marker = getattr(marker, "__IS_MARKER__", False)  # dependency-injector's own flag
        if is_marker and not isinstance(marker, ProvideOnLoop):
            yield dependant.call, str(dependency.name), marker
        yield from _markers(dependency)


def _why_unresolved(function: Any, parameter: str, own: set[int]) -> str | None:
    patched = _patched_registry.get_callable(function)
    if patched is None:
        return "is not decorated with @inject: add @inject under the route decorator"
    injection = patched.injections.get(parameter)
    if injection is None:
        return "its module is not wired: pass it to create_app(wire=[...])"
    if id(injection) not in own:
        # Wiring is process-wide: the module was wired to another app's container last.
        return (
            "its module is wired to another container (the last wire() wins): pass it to "
            "this app's create_app(wire=[...]), or take Depends(provide(...)), which "
            "resolves from the request's own app"
        )
    return None
