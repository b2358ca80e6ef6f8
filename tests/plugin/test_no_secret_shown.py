"""The test server's superuser password shows in no repr: pytest prints reprs in a failing
assert, and with --backend-reuse-db that password belongs to a cluster kept on a loopback port."""

import pprint

from backend.testing.databases import TestDatabase
from backend.testing.postgres import TestServer


def test_no_fixture_repr_holds_the_servers_password(
    backend_server: TestServer, backend_transactional_db: TestDatabase
) -> None:
    password = backend_server.admin_url.password
    assert password
    shown = [
        repr(backend_server),
        pprint.pformat(backend_server),
        repr(backend_server.pooler),
        repr(backend_server.server),
        repr(backend_transactional_db),
    ]
    for text in shown:
        assert password not in text, "a repr shows the server's password"
