"""100 async tests: the same through AsyncSessionDep and AsyncReadSessionDep, on the test's
own event loop."""

import pytest
from store.models import TABLES

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("table", sorted(TABLES))
async def test_rows_written_are_read_back(backend_async_client, table, case):
    names = [f"{table}-{case}-{n}" for n in range(3)]
    async with backend_async_client as client:
        for name in names:
            response = await client.post(f"/async/{table}", params={"name": name})
            assert response.status_code == 201
        assert (await client.get(f"/async/{table}")).json() == names
