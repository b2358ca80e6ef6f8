"""The embedded launcher as root: what `nobody` (the server's user, and so anyone who is the
server's superuser, through COPY … TO PROGRAM) plants in its folders never makes root write,
chown or run anything.

Each attack is planted as `nobody` would plant it, then the launcher is used as usual.
"""

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.embedded import (
    UNPRIVILEGED_USER,
    PostgresServer,
    embedded_bindir,
    free_port,
    has_tls,
    reachable_data_dir,
)
from backend.testing.postgres import Certificates, choose_bindir, new_server
from tests.conftest import project_root

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root hands folders to another user (and only root can test it)"
)


def as_nobody(*command: str) -> None:
    owner = pwd.getpwnam(UNPRIVILEGED_USER)
    subprocess.run(command, check=True, user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])


@dataclass(frozen=True)
class Snapshot:
    """What a path is: its type, owner, mode and (for a file) content, without following it."""

    kind: str
    uid: int
    gid: int
    mode: int
    content: bytes | tuple[str, ...]

    @classmethod
    def of(cls, path: Path) -> "Snapshot":
        info = path.lstat()
        folder = stat.S_ISDIR(info.st_mode)
        content = tuple(sorted(os.listdir(path))) if folder else path.read_bytes()
        kind = "folder" if folder else "file"
        return cls(kind, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), content)


@pytest.fixture
def roots_folder() -> Iterator[Path]:
    """A folder of root's own (0700) holding a secret 0600 file: what an attacker aims at."""
    folder = Path(tempfile.mkdtemp(prefix="backend-roots-"))
    secret = folder / "secret"
    secret.write_text("root's own\n")
    secret.chmod(0o600)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def used_server() -> Iterator[PostgresServer]:
    """A server that ran once and is stopped: its folder is `nobody`'s now."""
    bindir = choose_bindir()
    certificates = Certificates(Path(tempfile.mkdtemp())) if has_tls(bindir) else None
    server = new_server(bindir, certificates)
    server.start()
    server.stop()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


def start(server: PostgresServer) -> RuntimeError | None:
    """Start `server`; the error if it refused, so the test can look at the target first."""
    try:
        server.start()
    except RuntimeError as error:
        return error
    return None


@pytest.mark.parametrize("name", ["pg_hba.conf", "postgresql.auto.conf", "server.key"])
def test_a_link_planted_in_place_of_a_config_file_is_not_followed(
    used_server: PostgresServer, roots_folder: Path, name: str
) -> None:
    if name == "server.key" and used_server.tls is None:
        pytest.skip("this PostgreSQL build has no OpenSSL: the launcher writes no server.key")
    target = roots_folder / "secret"
    before = Snapshot.of(target)
    planted = used_server.data_dir / name
    as_nobody("ln", "-sfn", str(target), str(planted))

    error = start(used_server)

    assert Snapshot.of(target) == before
    assert error is None  # the link is replaced, not followed: the server starts as usual
    assert used_server.is_running()


def test_a_dangling_password_link_does_not_make_root_create_its_target(
    used_server: PostgresServer, roots_folder: Path
) -> None:
    before = Snapshot.of(roots_folder)
    password = used_server.root / "password"
    as_nobody("rm", str(password))
    as_nobody("ln", "-s", str(roots_folder / "created-by-root"), str(password))

    start(used_server)  # a new password for an old cluster: the server's user asked for that

    assert Snapshot.of(roots_folder) == before


def test_a_data_folder_that_holds_someone_elses_files_is_refused(roots_folder: Path) -> None:
    before = Snapshot.of(roots_folder)
    server = PostgresServer(choose_bindir(), roots_folder)

    with pytest.raises(RuntimeError, match="not empty"):
        server.start()

    assert Snapshot.of(roots_folder) == before
    assert Snapshot.of(roots_folder / "secret").uid == 0


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder `nobody` can write in, as a project folder handed to that user would be."""
    folder = Path(tempfile.mkdtemp(prefix="backend-shared-"))
    owner = pwd.getpwnam(UNPRIVILEGED_USER)
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_the_main_job_refuses_a_planted_pgdata_link(
    shared_folder: Path, roots_folder: Path
) -> None:
    data_dir = shared_folder / ".pgdata"
    as_nobody("ln", "-s", str(roots_folder), str(data_dir))
    before = Snapshot.of(roots_folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}

    job = subprocess.run(
        [sys.executable, "-m", "backend", "--port", str(free_port()), "--data-dir", str(data_dir)],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert Snapshot.of(roots_folder) == before
    assert Snapshot.of(roots_folder / "secret").uid == 0
    assert job.returncode != 0
    assert "is a symbolic link" in job.stderr
    assert "Traceback" not in job.stderr


def wheel_copies() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("backend-postgres-*"))


def test_server_binaries_planted_in_the_temp_folder_are_never_run() -> None:
    """A virtualenv `nobody` cannot reach, and a copy of its binaries planted where the
    launcher used to look for one (`backend-postgres-<hash of the package path>`)."""
    private = Path(tempfile.mkdtemp(prefix="backend-private-venv-"))  # 0700: nobody is out
    package = embedded_bindir().parent.parent
    for folder in [package, *package.parent.glob(f"{package.name}.libs")]:
        shutil.copytree(folder, private / folder.name, symlinks=True)
    bindir = private / package.name / embedded_bindir().relative_to(package)

    digest = hashlib.sha256(str(private / package.name).encode()).hexdigest()[:12]
    planted = Path(tempfile.gettempdir()) / f"backend-postgres-{digest}"
    marker = planted / "ran"
    fake_bindir = planted / package.name / embedded_bindir().relative_to(package)
    fake_bindir.mkdir(parents=True)
    for name in ["initdb", "pg_ctl", "postgres"]:
        (fake_bindir / name).write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 1\n')
        (fake_bindir / name).chmod(0o755)
    subprocess.run(["chown", "-R", f"{UNPRIVILEGED_USER}:", str(planted)], check=True)
    copies_before = wheel_copies()
    server = PostgresServer(bindir, Path(tempfile.mkdtemp(prefix="backend-test-pg-")))

    try:
        error = start(server)
        ran = marker.read_text() if marker.exists() else ""
        version = server.version() if error is None else ""
    finally:
        server.stop()
        shutil.rmtree(planted)
        shutil.rmtree(private)
        shutil.rmtree(server.root, ignore_errors=True)

    assert ran == ""
    assert error is None
    assert version[:2].isdigit()
    assert wheel_copies() <= copies_before  # the launcher's own copy is gone with its server


@pytest.mark.parametrize("name", ["port", "instance.pid"])
def test_a_link_planted_in_place_of_the_folders_own_files_is_not_followed(
    used_server: PostgresServer, roots_folder: Path, name: str
) -> None:
    """The files that say which port and which process a folder's server has: root has them
    written by the server's user, through no link."""
    target = roots_folder / "secret"
    before = Snapshot.of(target)
    as_nobody("ln", "-sfn", str(target), str(used_server.root / name))

    error = start(used_server)

    assert Snapshot.of(target) == before
    assert error is None
    assert used_server.is_running()


def test_the_url_command_reads_no_file_of_roots_through_a_planted_link(
    used_server: PostgresServer, roots_folder: Path
) -> None:
    secret = roots_folder / "secret"
    password = used_server.root / "password"
    as_nobody("rm", str(password))
    as_nobody("ln", "-s", str(secret), str(password))

    url = subprocess.run(
        [
            *(sys.executable, "-m", "backend", "url", "--show-password"),
            *("--data-dir", str(used_server.root)),
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "root's own" not in url.stdout + url.stderr
    assert url.returncode == 1
    assert "no embedded PostgreSQL has started in" in url.stderr


def test_the_url_command_refuses_a_moved_data_folder_another_user_made_first() -> None:
    """As root, a data folder the server's user cannot reach moves to a predictable name under
    /var/tmp; another user who made that folder first, with a port, a password and an
    instance.pid of their choosing, and holds its lock, is refused there as at a start."""
    stranger = pwd.getpwnam("daemon")  # neither root nor the server's user
    private = Path(tempfile.mkdtemp(prefix="backend-private-"))  # 0700: nobody cannot enter
    data_dir = private / ".pgdata"
    moved = reachable_data_dir(data_dir)
    assert moved.parent == Path("/var/tmp")  # noqa: S108
    chosen = "stranger-chosen-password"

    def as_stranger(*command: str) -> "subprocess.Popen[bytes]":
        uid, gid = stranger.pw_uid, stranger.pw_gid
        return subprocess.Popen(command, user=uid, group=gid, extra_groups=[])

    assert as_stranger("mkdir", "-m", "755", str(moved)).wait() == 0
    for name, content in [("port", "5432"), ("password", chosen), ("instance.pid", "1")]:
        writer = as_stranger("sh", "-c", f'umask 022 && echo {content} > "$1"', "sh",
                             str(moved / name))  # fmt: skip
        assert writer.wait() == 0
    holder = as_stranger("flock", "-x", str(moved), "sleep", "60")
    try:
        url = subprocess.run(
            [
                *(sys.executable, "-m", "backend", "url", "--show-password"),
                *("--data-dir", str(data_dir)),
            ],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(moved)
        shutil.rmtree(private)

    assert chosen not in url.stdout + url.stderr
    assert "served by process" not in url.stderr
    assert url.stdout == ""
    assert url.returncode == 1
    assert f"{moved} belongs to user id {stranger.pw_uid}" in url.stderr
    assert "Traceback" not in url.stderr
