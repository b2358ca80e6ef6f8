"""The databases of a test run: a template with the user's schema, and each test's database.

Per pytest process (so per xdist worker), on the run's server:
- a template, built once with the user's schema (`backend_schema`);
- for transaction mode, one clone of it that no test ever commits to;
- for database mode, a clone per test (CREATE DATABASE … TEMPLATE, about 20 ms), dropped after.
Names carry a token of the run and the worker, so runs and workers sharing a server (xdist, or
TEST_DATABASE_URL) never meet; all are dropped when the run ends.
"""

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from dependency_injector import providers
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.db.container import Container, use_database
from backend.testing.drivers import async_driver, with_run_driver
from backend.testing.isolation import MAKERS, OuterTransaction
from backend.testing.postgres import Door, TestServer

Mode = Literal["transaction", "database"]
Schema = Callable[[Engine], None]


@dataclass
class TestDatabase:
    """A test's database, and how its app reaches it.

    `mode` "transaction": a database shared by the tests of this process, where the test's
    sessions all join one transaction rolled back at its end; "database": a clone of the
    template for this test alone, where commits are real. `url` is the endpoint the app gets:
    the server (TLS, certificate verified), the TLS front (`backend_neon`) or PgBouncer in
    transaction mode (`@pytest.mark.backend_pooler`).
    """

    __test__ = False  # not a test class, whatever pytest makes of its name

    name: str
    url: URL
    mode: Mode
    endpoint: Door = "default"
    # Transaction mode: where the test's connection comes from. The run shares one engine
    # (Databases.outer_engine), so a test takes a warm connection, not a new TLS handshake.
    outer_engine: Engine | None = field(default=None, repr=False)
    _outer: OuterTransaction | None = field(default=None, repr=False)
    _bound: list[tuple[Container, Any, Any]] = field(default_factory=list, repr=False)

    @property
    def pooler(self) -> bool:
        return self.endpoint == "pooler"

    def bind(self, container: Container) -> None:
        """Point `container` at this database, before its engines are built or used.

        Database mode: `use_database()`, nothing else. Transaction mode: that, plus its four
        session makers replaced by ones joining the test's transaction.
        """
        pooler_setting = container.config.database.pooler()
        driver_setting = container.config.database.async_driver()
        if self.pooler:
            # What a Neon URL with -pooler in its host gets by itself: PgBouncer's rules.
            container.config.database.pooler.from_value("pgbouncer")
        container.config.database.async_driver.from_value(async_driver())
        use_database(container, with_run_driver(self.url))
        self._bound.append((container, pooler_setting, driver_setting))
        if self.mode == "transaction":
            outer = self._outer_transaction()
            for name in MAKERS:
                getattr(container, name).override(providers.Object(outer.makers[name]))

    def unbind(self, container: Container) -> None:
        """Undo bind(): the overrides made here go, the pooler and driver settings come back."""
        for index, (bound, pooler_setting, driver_setting) in enumerate(self._bound):
            if bound is container:
                del self._bound[index]
                if self.mode == "transaction":
                    for name in MAKERS:
                        getattr(container, name).reset_last_overriding()
                container.config.database.pooler.from_value(pooler_setting)
                container.config.database.async_driver.from_value(driver_setting)
                return

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session of the test's own (to arrange or check), closed at exit.

        In transaction mode it joins the test's transaction and sees what the app wrote; in
        database mode it is a session on this database as the app would make it.
        """
        if self.mode == "transaction":
            with self._outer_transaction().makers["session_maker"]() as session:
                yield session
            return
        container = self._own_container()
        try:
            with container.session_maker()() as session:
                yield session
        finally:
            container.engine().dispose()

    @asynccontextmanager
    async def async_session(self) -> AsyncIterator[AsyncSession]:
        """The same as an AsyncSession, for async tests; what it opens, it closes on the
        running event loop, whichever that is."""
        if self.mode == "transaction":
            async with self._outer_transaction().makers["async_session_maker"]() as session:
                yield session
            return
        container = self._own_container()
        try:
            async with container.async_session_maker()() as session:
                yield session
        finally:
            await container.async_engine().dispose()

    def close(self) -> None:
        """The end of the test: every bound container let go, the transaction rolled back."""
        for container, _, _ in list(self._bound):
            self.unbind(container)
        if self._outer is not None:
            self._outer.end()
            self._outer = None

    def _outer_transaction(self) -> OuterTransaction:
        if self._outer is None:
            if self.outer_engine is None:
                self.outer_engine = self._own_container().engine()
            self._outer = OuterTransaction(self.outer_engine)
        return self._outer

    def _own_container(self) -> Container:
        container = Container()
        if self.pooler:
            container.config.database.pooler.from_value("pgbouncer")
        container.config.database.async_driver.from_value(async_driver())
        use_database(container, with_run_driver(self.url))
        return container


@dataclass
class Databases:
    """The template and the clones of one pytest process, on `server`.

    Database mode's clones are made one ahead, and dropped, by a thread of their own: a clone
    (CREATE DATABASE … TEMPLATE) and a drop cost tens of milliseconds, which then pass while
    the previous test runs instead of in front of the next one.
    """

    server: TestServer
    worker: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    _template: str | None = None
    _shared: str | None = None
    _outer_engine: Engine | None = None
    _clones: int = 0
    _made: list[str] = field(default_factory=list)
    _next: "Future[str] | None" = None

    def __post_init__(self) -> None:
        # Kept connections: a new one costs a TLS handshake and SCRAM, about as much as a
        # clone. Pinged before use, since a test may restart the server under them.
        self._admin = sa.create_engine(
            self.server.admin_url, isolation_level="AUTOCOMMIT", pool_size=2, pool_pre_ping=True
        )
        self._background = ThreadPoolExecutor(1, thread_name_prefix="backend-test-databases")

    def template(self, schema: Schema) -> str:
        """The template database, built with `schema` on first call."""
        if self._template is None:
            name = self._name("template")
            self._create(name)
            engine = sa.create_engine(self.server.url(name), poolclass=sa.NullPool)
            try:
                schema(engine)
            finally:
                engine.dispose()
            self._template = name
        return self._template

    def shared(self, schema: Schema) -> str:
        """Transaction mode's database: one clone of the template, never committed to."""
        if self._shared is None:
            self._shared = self._clone(self.template(schema), self._name("shared"))
        return self._shared

    def outer_engine(self, schema: Schema) -> Engine:
        """The engine transaction mode's tests take their connection from: the layer's own
        (so the connection is configured as the app's), on the shared database, for the run."""
        if self._outer_engine is None:
            container = Container()
            use_database(container, with_run_driver(self.server.url(self.shared(schema))))
            self._outer_engine = container.engine()
        return self._outer_engine

    def clone(self, schema: Schema) -> str:
        """A new clone of the template, for one test; the next one is started meanwhile."""
        template = self.template(schema)
        ready, self._next = self._next, None
        if ready is None:
            ready = self._background.submit(self._new_clone, template)
        self._next = self._background.submit(self._new_clone, template)
        try:
            return ready.result()
        except sa.exc.DBAPIError:
            # Made while the server was away (a test restarting it): once more, now.
            return self._new_clone(template)

    def drop(self, name: str) -> None:
        """Drop `name`, in the background (close() waits for it)."""
        self._background.submit(self._drop, name)

    def close(self) -> None:
        """Drop every database this run made, the template last."""
        self._background.shutdown(wait=True)  # the clone made ahead, and the drops queued
        if self._outer_engine is not None:
            self._outer_engine.dispose()
        for name in reversed(list(self._made)):
            self._drop(name)
        self._admin.dispose()

    def _name(self, suffix: str) -> str:
        return f"backend_{self.token}_{self.worker}_{suffix}"

    def _create(self, name: str, template: str | None = None) -> None:
        statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        with self._admin.connect() as connection:
            connection.exec_driver_sql(statement)
        self._made.append(name)

    def _new_clone(self, template: str) -> str:
        self._clones += 1
        return self._clone(template, self._name(f"t{self._clones}"))

    def _drop(self, name: str) -> None:
        try:
            with self._admin.connect() as connection:
                # FORCE: the app's pools may still hold connections (PostgreSQL 13+).
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except sa.exc.DBAPIError:
            return  # the server is away (a test stopped it): close() tries again
        if name in self._made:
            self._made.remove(name)

    def _clone(self, template: str, name: str) -> str:
        try:
            self._create(name, template)
        except sa.exc.OperationalError as error:
            if "being accessed by other users" not in str(error):
                raise
            # A connection the schema hook left open on the template: a template needs
            # none. End them and clone again.
            with self._admin.connect() as connection:
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": template},
                )
            self._create(name, template)
        return name
