"""`python -m backend check` checks each DATABASE_READ_URL replica like the primary, and counts
its connection budget against the replica's own max_connections."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from backend.embedded import free_port
from tests.conftest import project_root
from tests.replicas.standby import Cluster, replication_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with replication_cluster(standbys=1) as cluster:
        yield cluster


def check(cluster: Cluster, read_url: str) -> tuple[int, dict[str, Any], str]:
    ours = ("DATABASE_", "PG", "BACKEND_CONFIG", "WEB_CONCURRENCY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env["DATABASE_URL"] = cluster.url(cluster.primary).render_as_string(hide_password=False)
    env["DATABASE_READ_URL"] = read_url
    runs = [
        subprocess.run(
            [sys.executable, "-m", "backend", "check", *extra],
            cwd=project_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        for extra in ((), ("--json",))
    ]
    text, machine = runs
    for run in runs:
        assert cluster.primary.password not in run.stdout + run.stderr
    assert text.returncode == machine.returncode
    return machine.returncode, json.loads(machine.stdout), text.stdout


def test_each_replica_is_checked_like_the_primary(cluster: Cluster) -> None:
    (standby,) = cluster.standbys
    code, document, text = check(cluster, cluster.url(standby).render_as_string(False))
    assert code == 0, text
    (replica,) = document["replicas"]
    assert {step["name"]: step["status"] for step in replica["steps"]}["authentication"] == "pass"
    (connections,) = [step for step in replica["steps"] if step["name"] == "connections"]
    assert "2 engine" in connections["detail"] or "x (10 + 10)" in connections["detail"], (
        connections
    )
    assert f"replica 1: postgresql+psycopg2://postgres:***@127.0.0.1:{standby.port}/" in text
    assert "replica 1: ✔ nothing failed" in text


def test_an_unreachable_replica_fails_the_check(cluster: Cluster) -> None:
    closed = cluster.url(cluster.standbys[0]).set(port=free_port())
    code, document, text = check(cluster, closed.render_as_string(hide_password=False))
    assert code == 1, text
    assert document["steps"]
    assert all(step["status"] != "fail" for step in document["steps"])  # the primary is fine
    (replica,) = document["replicas"]
    assert [s["name"] for s in replica["steps"] if s["status"] == "fail"] == ["tcp"]
