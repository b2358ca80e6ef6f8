"""Test tooling for apps on backend: a real PostgreSQL per run, per-test isolation, Neon on tap.

- `backend.testing.plugin`: the pytest plugin's hooks (registered through the `pytest11` entry
  point, so installing the package enables it; it starts nothing until a test asks for a
  fixture);
- `backend.testing.fixtures`: its fixtures, and `database_mode()`, the test's mode decided once;
- `backend.testing.postgres`: the run's `TestServer` (`run_test_server()`), its certificates,
  and the endpoints clients use;
- `backend.testing.front`: a TLS front with Neon's proxy's ways of misbehaving;
- `backend.testing.pgbouncer`: PgBouncer in transaction mode, as Neon's `-pooler` endpoint.

Importing this package imports none of them.
"""
