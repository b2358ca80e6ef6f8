"""A fix for dependency-injector 4.49 on Python 3.11, applied when backend.container is imported.

An async route whose Closing markers reach one resource twice (its session, and a service built
on that session) shuts the resource down twice. The second shutdown returns a NullAwaitable,
which 3.11's asyncio.gather wraps with `yield from` and so rejects ("'NullAwaitable' object is
not iterable"): the request fails after the route has run. 3.12's gather uses `await`, which
takes it; this gives the gather that dependency-injector's resolver calls the same behaviour.
"""

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

from dependency_injector import _cwiring


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _gather(*awaitables: Awaitable[Any]) -> "asyncio.Future[list[Any]]":
    return asyncio.gather(
        *(
            awaitable
            if asyncio.iscoroutine(awaitable) or asyncio.isfuture(awaitable)
            else _awaited(awaitable)
            for awaitable in awaitables
        )
    )


def fix_closing_on_python_311() -> None:
    # Only where the bug is, and only while dependency-injector still calls asyncio's gather.
    if sys.version_info < (3, 12) and getattr(_cwiring, "gather", None) is asyncio.gather:
        setattr(_cwiring, "gather", _gather)  # noqa: B010 (mypy: not in _cwiring's stubs)
