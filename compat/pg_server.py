"""A throwaway loopback PostgreSQL for one compat run, started with the layer's own launcher.

Run by compat/run.py with the app's venv interpreter (the layer is installed there):

    python pg_server.py [DATABASE ...]

Prints one JSON line {"host", "port", "user", "password"} once the server is up and the
databases are made, then serves until its standard input closes, and stops the server.
Plaintext on 127.0.0.1: the layer asks for TLS only off loopback.
"""

import json
import shutil
import sys

import sqlalchemy as sa

from backend.testing.postgres import choose_bindir, new_server


def main(databases: list[str]) -> None:
    server = new_server(choose_bindir(), certificates=None)  # no certificates: plaintext
    try:
        server.start()
        admin = sa.create_engine(server.url(), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for name in databases:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        address = {"host": "127.0.0.1", "port": server.port, "user": "postgres"}
        print(json.dumps({**address, "password": server.password}), flush=True)
        sys.stdin.read()  # until the harness closes the pipe (or dies)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
