from backend.migrations import run_migrations
from tests.migrations.heroes import metadata

run_migrations(metadata)
