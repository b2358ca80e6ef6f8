"""Awaiting from code that SQLAlchemy calls synchronously inside its asyncio greenlet.

An asyncio engine runs the pool and the dialect's connect in a greenlet, as sync code: the
pool queue's `get` and the `do_connect` event cannot be coroutines, so what they await
(a connection handed over, a pause between connect attempts) must be awaited from there.
SQLAlchemy 2.1 names that `await_`; 2.0 names it `await_only`, which 2.1 keeps as an alias to
deprecate in 2.2. Neither is in SQLAlchemy's documented API (the public
AdaptedConnection.run_async needs a connection, which neither place has yet): this needs
sqlalchemy<2.3 until upstream drops the 2.0 name or moves the function.
"""

try:
    from sqlalchemy.util import await_  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # SQLAlchemy 2.0
    from sqlalchemy.util import await_only as await_  # type: ignore[no-redef,unused-ignore]

__all__ = ["await_"]
