"""100 sync tests: rows written through SessionDep routes, read back through ReadSessionDep."""

import pytest
from store.models import TABLES


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("table", sorted(TABLES))
def test_rows_written_are_read_back(backend_client, table, case):
    names = [f"{table}-{case}-{n}" for n in range(3)]
    for name in names:
        assert backend_client.post(f"/{table}", params={"name": name}).status_code == 201
    assert backend_client.get(f"/{table}").json() == names  # this test's rows, and no others
