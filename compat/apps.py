"""The apps the layer is tried on: where each is, at which commit, how it installs and tests,
and the change each idiom makes to it. Nothing here is the apps' code: only the lines that the
change looks for (which must be found exactly once) and the lines it puts in their place."""

from dataclasses import dataclass, field

Idiom = str  # "none" (the app's own DB code), "depends", "di"


@dataclass(frozen=True)
class Edit:
    """Replace `old` (exact text, found exactly once in `path`) with `new`; `imports` go on
    top of the file."""

    path: str
    old: str
    new: str
    imports: str = ""


@dataclass(frozen=True)
class App:
    name: str
    repo: str  # owner/name on GitHub, fetched with the search tool's `fetch`
    commit: str
    kind: str  # "sync" or "async"
    workdir: str  # where its commands run, inside the checkout
    # How its repo says to install it, as pip arguments per call (run from the checkout).
    # "{uv_lock}" makes the constraints file of the uv.lock at the checkout's top.
    install: tuple[tuple[str, ...], ...]
    databases: tuple[str, ...]  # made on the server before anything runs
    env: dict[str, str]  # {host} {port} {user} {password} are filled in
    commands: tuple[str, ...]  # its own test steps, each through bash, in `workdir`
    edits: dict[Idiom, tuple[Edit, ...]] = field(default_factory=dict)
    layer_extras: str = ""  # the layer's extras this app needs: "[asyncpg]" for the async path
    python: str = ""  # the X.Y its repo requires, when this machine's python3 is too old for it
    # Services its tests need beside PostgreSQL, started on loopback for the run: "redis"
    # (redis-server on the machine) fills {redis_port}.
    services: tuple[str, ...] = ()


FULL_STACK = App(
    name="full-stack-fastapi-template",
    repo="fastapi/full-stack-fastapi-template",
    # The last commit before it required Python 3.14 (14728b6): runs on 3.11-3.13.
    commit="a727535488542228dc19b13f217a104ad317c122",
    kind="sync",
    workdir="backend",
    install=(
        # backend/pyproject.toml's dependencies and dev group, at the versions of its uv.lock.
        ("-c", "{uv_lock}", "{pyproject:backend/pyproject.toml:dev}"),
    ),
    databases=("app",),
    env={
        # Its settings (app/core/config.py); the rest comes from the repo's own ../.env.
        "POSTGRES_SERVER": "{host}",
        "POSTGRES_PORT": "{port}",
        "POSTGRES_USER": "{user}",
        "POSTGRES_PASSWORD": "{password}",
        "POSTGRES_DB": "app",
        "DATABASE_URL": "postgresql://{user}:{password}@{host}:{port}/app",
    },
    # scripts/prestart.sh (migrations, first superuser), then scripts/tests-start.sh.
    commands=("bash scripts/prestart.sh", "bash scripts/tests-start.sh"),
    edits={
        "depends": (
            Edit(
                "backend/app/api/deps.py",
                "SessionDep = Annotated[Session, Depends(get_db)]",
                "SessionDep = Annotated[Session, Depends(get_session)]",
                imports="from backend import get_session",
            ),
        ),
        "di": (
            Edit(
                "backend/app/api/deps.py",
                "SessionDep = Annotated[Session, Depends(get_db)]",
                "from backend import SessionDep",
            ),
            Edit(
                "backend/app/main.py",
                "app.include_router(api_router, prefix=settings.API_V1_STR)",
                "app.include_router(api_router, prefix=settings.API_V1_STR)\ninstall(app)",
                imports="from backend import install",
            ),
        ),
    },
)

# Its dependency is a sessionmaker (`Depends(get_session)` yields AsyncSessionLocal), and its
# tests override that dependency with one bound to a rolled-back test transaction: so the
# smallest change is the engine under its sessionmaker; its use cases need a maker, not the
# layer's AsyncSession.
ASYNC_RHOBORO = App(
    name="async-fastapi-sqlalchemy",
    repo="rhoboro/async-fastapi-sqlalchemy",
    # "Update fastapi==0.115.6": requirements.lock pins FastAPI 0.115.6, SQLAlchemy 2.0.37.
    commit="8f2f6892aeee89df708080bd514693941d632f1f",
    kind="async",
    layer_extras="[asyncpg]",  # a hard dependency of the layer until the extra exists
    workdir=".",
    install=(
        ("-r", "requirements.lock"),
        # Unpinned in the repo; pinned to the versions of its next dependency commit (37f8f2c,
        # uv.lock, Feb 2025): pytest 9 turns its `--strict` into strict config, which refuses
        # its `xfails_strict` key.
        (
            "-r",
            "requirements_test.txt",
            "pytest==8.3.4",
            "pytest-cov==6.0.0",
            "pytest-env==1.1.5",
            "pytest-mock==3.14.0",
            "pytest-randomly==3.16.0",
            "psycopg2-binary==2.9.10",
            "httpx==0.28.1",
        ),
    ),
    databases=(),  # its conftest makes (and drops) `test`
    env={
        # APP_CONFIG_FILE=test comes from its pytest-env setting; these win over test.env.
        "DB_URI": "postgresql+asyncpg://{user}:{password}@{host}:{port}",
        "ECHO_SQL": "False",
        "DATABASE_URL": "postgresql://{user}:{password}@{host}:{port}/test",
    },
    commands=("python -m pytest app",),  # README "Test": pytest app
    edits={
        "depends": (
            Edit(
                "app/db.py",
                "    bind=async_engine,",
                "    bind=layer_async_engine,",
                imports="from backend.db.session import async_engine as layer_async_engine",
            ),
        ),
        "di": (
            Edit(
                "app/db.py",
                "    bind=async_engine,",
                "    bind=layer_async_engine,",
                imports="from backend.db.session import async_engine as layer_async_engine",
            ),
            Edit(
                "app/main.py",
                'app.include_router(api_router, prefix="/api")',
                'app.include_router(api_router, prefix="/api")\ninstall(app)',
                imports="from backend import install",
            ),
        ),
    },
)

# Its tests do not override its dependency: every route takes `Depends(get_db)` (15 routes,
# no alias), and the suite calls them through httpx on the app's own engine. So the smallest
# change rebinds the name every route imports: `get_db` in app/database.py becomes the
# layer's dependency (its own is kept under another name, unused).
GET_DB = "async def get_db() -> AsyncGenerator:"
ASYNC_GRILLAZZ = App(
    name="fastapi-sqlalchemy-asyncpg",
    repo="grillazz/fastapi-sqlalchemy-asyncpg",
    # "lint code" (2025-07-26): its CI on Python 3.13, a uv.lock, and its conftest without a
    # dependency override (one came on 2025-12-25). The next commit moved its logging to
    # rotoger 0.1, which this machine's registry no longer has (only 0.3, another API); from
    # Nov 2025 it requires Python ==3.14.0.
    commit="ffccf8fda09efb0808ad71754b917908bcce2c8a",
    kind="async",
    layer_extras="[asyncpg]",
    python="3.13",
    services=("redis",),  # its JWTs are stored in Redis (CI: a redis service)
    workdir=".",
    install=(
        # pyproject.toml's dependencies (its test tools among them) at its uv.lock versions.
        ("-c", "{uv_lock}", "{pyproject:pyproject.toml}"),
    ),
    databases=("testdb",),
    env={
        # As its CI (.github/workflows/build-and-test.yml); its URL has no port: asyncpg
        # takes PGPORT.
        "POSTGRES_HOST": "{host}",
        "PGPORT": "{port}",
        "POSTGRES_USER": "{user}",
        "POSTGRES_PASSWORD": "{password}",
        "POSTGRES_DB": "testdb",
        "REDIS_HOST": "{host}",
        "REDIS_PORT": "{redis_port}",
        "REDIS_DB": "2",
        "JWT_EXPIRE": "3600",
        "JWT_ALGORITHM": "HS256",
        "DATABASE_URL": "postgresql://{user}:{password}@{host}:{port}/testdb",
    },
    commands=(
        # Its CI's "Create database schema" step, then its "Test" step (uv run pytest).
        'psql "$DATABASE_URL" -c "CREATE SCHEMA shakespeare; CREATE SCHEMA happy_hog;"',
        "python -m pytest",
    ),
    edits={
        "depends": (
            Edit(
                "app/database.py",
                GET_DB,
                "async def _own_get_db() -> AsyncGenerator:",
                imports="from backend import get_async_session as get_db",
            ),
        ),
        "di": (
            Edit(
                "app/database.py",
                GET_DB,
                "async def _own_get_db() -> AsyncGenerator:",
                # The dependency inside `AsyncSessionDep`: its routes take
                # `AsyncSession = Depends(get_db)`, not an Annotated alias.
                imports="from typing import get_args\nfrom backend import AsyncSessionDep\n"
                "get_db = get_args(AsyncSessionDep)[1].dependency",
            ),
            Edit(
                "app/main.py",
                "app = create_app()",
                "app = create_app()\ninstall(app)",
                imports="from backend import install",
            ),
        ),
    },
)

APPS = {app.name: app for app in (FULL_STACK, ASYNC_RHOBORO, ASYNC_GRILLAZZ)}
