"""Run real FastAPI apps' own test suites with the layer dropped in (compat/README.md).

    python compat/run.py [--app NAME] [--idiom none|depends|di|all] [--wheel PATH]

Per app: its pinned commit checked out from the fetched git directory into a temporary
folder, a fresh venv there with its own dependencies (its pins) and the layer's wheel, the
idiom's change applied (and nothing else), a throwaway loopback PostgreSQL, its own test
commands. Prints `NAME idiom: N passed, M failed` per run; exits 1 if anything failed.
Standard library only: everything the apps need is installed into their venvs.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from apps import APPS, App, Edit

HERE = Path(__file__).resolve().parent
MAIN_CHECKOUT = Path("/work/main")
MIRRORS = Path("/work/.mirror")
IDIOMS = ("none", "depends", "di")
# pytest's closing line: "==== 3 failed, 57 passed, 1 warning in 4.20s ===="
SUMMARY = re.compile(r"^=+ (?P<counts>.*\d+ \w+.*) in [\d.]+s(?: \([^)]*\))? =+$")


@dataclass
class Result:
    passed: int = 0
    failed: int = 0  # failed tests, errors, and failed steps outside pytest
    note: str = ""

    def line(self, app: App, idiom: str) -> str:
        tail = f" ({self.note})" if self.note else ""
        return f"{app.name} {idiom}: {self.passed} passed, {self.failed} failed{tail}"


def run(cmd: list[str], log: Path, **options: object) -> int:
    """Run `cmd`, appending its output to `log`; its exit status."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False, **options)  # type: ignore[call-overload]  # noqa: S603
    return int(done.returncode)


def must(cmd: list[str], log: Path, **options: object) -> None:
    if run(cmd, log, **options) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)} (see {log})")


def git_dir(app: App) -> Path:
    """The git directory `fetch` made for the app (/work/.mirror/<owner>+<name>/repo)."""
    found = MIRRORS / app.repo.replace("/", "+") / "repo"
    if not found.is_dir():
        raise SystemExit(f"{found} missing: fetch github:{app.repo} with the search tool first")
    return found


def absent_blobs(app: App) -> list[str]:
    """Paths at the commit whose blobs the snapshot left out (its largest files may be)."""
    git = ["git", "--git-dir", str(git_dir(app))]
    tree = subprocess.run(  # noqa: S603
        [*git, "ls-tree", "-r", "-z", app.commit], capture_output=True, text=True, check=True
    ).stdout
    entries = [line.split("\t", 1) for line in tree.split("\0") if line]
    blobs = [(meta.split()[2], path) for meta, path in entries if meta.split()[1] == "blob"]
    found = subprocess.run(  # noqa: S603
        [*git, "cat-file", "--batch-check"],
        input="".join(f"{sha}\n" for sha, _ in blobs),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [path for (_, path), line in zip(blobs, found, strict=True) if line.endswith("missing")]


def checkout(app: App, dest: Path, log: Path) -> None:
    archive = dest.with_suffix(".tar")
    # Files absent from the snapshot are left out (and listed in the log), not fatal.
    absent = absent_blobs(app)
    with log.open("a") as out:
        out.writelines(f"absent from the snapshot, not checked out: {path}\n" for path in absent)
    excluded = [f":(exclude,literal){path}" for path in absent]
    archive_cmd = ["archive", "-o", str(archive), app.commit, *(["."] if excluded else [])]
    must(["git", "--git-dir", str(git_dir(app)), *archive_cmd, *excluded], log)
    dest.mkdir()
    must(["tar", "-xf", str(archive), "-C", str(dest)], log)
    archive.unlink()


def apply(edit: Edit, source: Path) -> None:
    """The idiom's change; refuses loudly when the app's line is not there exactly once."""
    path = source / edit.path
    text = path.read_text()
    count = len(re.findall(rf"^{re.escape(edit.old)}$", text, flags=re.MULTILINE))
    if count != 1:
        raise SystemExit(f"{edit.path}: expected the line {edit.old!r} once, found it {count}x")
    text = re.sub(rf"^{re.escape(edit.old)}$", lambda _: edit.new, text, flags=re.MULTILINE)
    path.write_text(f"{edit.imports}\n{text}" if edit.imports else text)


def uv_lock_constraints(source: Path, dest: Path) -> Path:
    """`name==version` for every registry package in the checkout's uv.lock."""
    lock = tomllib.loads((source / "uv.lock").read_text())
    pins = [
        f"{package['name']}=={package['version']}"
        for package in lock["package"]
        if "registry" in package.get("source", {})
    ]
    dest.write_text("\n".join(pins) + "\n")
    return dest


def pyproject_requirements(source: Path, spec: str) -> list[str]:
    """`path[:group]`: the project's dependencies, and that dependency group's if named."""
    path, _, group = spec.partition(":")
    project = tomllib.loads((source / path).read_text())
    extra = project["dependency-groups"][group] if group else []
    return [*project["project"]["dependencies"], *extra]


def expand(argument: str, source: Path, work: Path) -> list[str]:
    if argument == "{uv_lock}":
        return [str(uv_lock_constraints(source, work / "uv-lock-constraints.txt"))]
    if argument.startswith("{pyproject:"):
        return pyproject_requirements(source, argument[len("{pyproject:") : -1])
    return [argument]


def frozen(python: Path) -> dict[str, str]:
    out = subprocess.run(  # noqa: S603
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("==", 1) for line in out.splitlines() if "==" in line)


def make_venv(app: App, work: Path, wheel: Path, base_python: str, log: Path) -> Path:
    """A venv with the app's dependencies as its repo pins them, then the layer's wheel.
    Says which of the app's installed versions the layer's requirements moved."""
    source = work / "pristine"
    checkout(app, source, log)
    venv = work / "venv"
    must([base_python, "-m", "venv", str(venv)], log)
    python = venv / "bin" / "python"
    must([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
    for step in app.install:
        arguments = [part for argument in step for part in expand(argument, source, work)]
        must([str(python), "-m", "pip", "install", "-q", *arguments], log, cwd=source)
    before = frozen(python)
    # The app's installed versions hold, except where below one of the layer's own floors.
    floors = layer_floors(wheel)
    held = [f"{n}=={v}" for n, v in before.items() if not below(v, floors.get(canonical(n)))]
    pins = work / "app-pins.txt"
    pins.write_text("\n".join(held) + "\n")
    layer = [str(python), "-m", "pip", "install", "-q", f"{wheel}{app.layer_extras}"]
    if run([*layer, "-c", str(pins)], log) != 0:
        print(f"  {app.name}: the app's pins cannot all hold beside the layer (see {log})")
        must(layer, log)
    after = frozen(python)
    moved = [f"{n} {v} -> {after.get(n)}" for n, v in before.items() if v != after.get(n)]
    print(f"  {app.name}: the layer's requirements moved: {', '.join(moved) or 'nothing'}")
    return python


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def layer_floors(wheel: Path) -> dict[str, str]:
    """`name>=X` of the wheel's requirements, its extras' included: {name: X}."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    requirement = r"^Requires-Dist: ([\w.-]+)(?:\[[^]]*\])? ?[^;\n]*?>=([\w.]+)"
    floors = re.findall(requirement, text, flags=re.MULTILINE)
    return {canonical(name): version for name, version in floors}


def number(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def below(version: str, floor: str | None) -> bool:
    return floor is not None and number(version) < number(floor)


def versions(python: Path) -> str:
    names = ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "pydantic", "psycopg", "asyncpg")
    installed = {name.lower(): version for name, version in frozen(python).items()}
    return ", ".join(f"{name} {installed[name]}" for name in names if name in installed)


def counts(output: str) -> tuple[int, int] | None:
    """(passed, failed + errors) of pytest's closing line, if it printed one."""
    lines = [m for line in output.splitlines() if (m := SUMMARY.match(line.strip()))]
    if not lines:
        return None
    found = dict((word, int(n)) for n, word in re.findall(r"(\d+) (\w+)", lines[-1]["counts"]))
    bad = sum(n for word, n in found.items() if word in ("failed", "error", "errors"))
    return found.get("passed", 0), bad


def interpreter(app: App, given: str | None) -> str:
    """--python if given; else the X.Y the app requires (on PATH or under pyenv); else ours."""
    if given or not app.python:
        return given or sys.executable
    name = f"python{app.python}"
    # pyenv's own versions first: its shim on PATH refuses a version not selected.
    pyenv = sorted(Path("/root/.pyenv/versions").glob(f"{app.python}.*/bin/{name}"))
    found = str(pyenv[-1]) if pyenv else shutil.which(name)
    if found is None:
        raise SystemExit(f"{app.name} needs Python {app.python}: no {name} here (or --python)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_services(app: App, log: Path) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    """The app's other services on loopback, throwaway: their ports, and the processes."""
    ports: dict[str, str] = {}
    started: list[subprocess.Popen[bytes]] = []
    for service in app.services:
        if service != "redis":
            raise SystemExit(f"{app.name}: unknown service {service!r}")
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(f"{app.name} needs redis-server (apt-get install redis-server)")
        port = free_port()
        # No persistence, in the work folder: a throwaway like the PostgreSQL.
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command = [binary, "--port", str(port), *options, "--dir", str(log.parent)]
        with log.open("a") as out:
            started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))  # noqa: S603
        ports["redis_port"] = str(port)
        for _ in range(100):  # up within 10 s
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
    return ports, started


def run_idiom(app: App, idiom: str, work: Path, python: Path) -> Result:
    log = work / f"{idiom}.log"
    source = work / idiom
    checkout(app, source, log)
    for edit in app.edits.get(idiom, ()):
        apply(edit, source)
    ports, services = start_services(app, log)
    server = subprocess.Popen(  # noqa: S603 (our helper, the venv's interpreter)
        [str(python), str(HERE / "pg_server.py"), *app.databases],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        if not first:
            raise SystemExit(f"{app.name}: the PostgreSQL helper exited ({server.wait()})")
        address = {**json.loads(first), **ports}
        env = {key: value.format(**address) for key, value in app.env.items()}
        bindir = str(python.parent)
        env = {**os.environ, **env, "PATH": f"{bindir}:{os.environ['PATH']}"}
        env["VIRTUAL_ENV"] = str(python.parent.parent)
        # Its own package importable from this checkout, as `uv sync` (editable) makes it.
        env["PYTHONPATH"] = str(source / app.workdir)
        result, start = Result(), log.stat().st_size
        for command in app.commands:
            status = run(["bash", "-c", command], log, cwd=source / app.workdir, env=env)
            if status != 0 and command == app.commands[-1]:
                continue  # the test step: its counts say what failed
            if status != 0:
                result.failed += 1
                result.note = f"{command!r} exited {status}, see {log}"
                return result
        output = log.read_text()[start:]
        tested = counts(output)
        if tested is None:  # pytest did not get to run the tests: say why
            errors = [line for line in output.splitlines() if line.startswith("E ")]
            return Result(0, 1, f"no tests ran: {(errors or ['?'])[-1][1:].strip()}; see {log}")
        result.passed, result.failed = tested
        if result.failed:
            result.note = f"see {log}"
        return result
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=120)
        for service in services:
            service.terminate()
            service.wait(timeout=30)


def build_wheel(work: Path) -> Path:
    log = work / "wheel.log"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
    must([*pip, str(MAIN_CHECKOUT), "-w", str(work)], log)
    return next(work.glob("*.whl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), action="append")
    parser.add_argument("--idiom", choices=[*IDIOMS, "all"], default="all")
    parser.add_argument("--wheel", type=Path, help=f"the layer's wheel (default: {MAIN_CHECKOUT})")
    parser.add_argument(
        "--python", help="the venvs' interpreter (default: the X.Y an app requires, else ours)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folders and logs")
    options = parser.parse_args()
    idioms = IDIOMS if options.idiom == "all" else (options.idiom,)
    root = Path(tempfile.mkdtemp(prefix="compat-"))
    print(f"work folder: {root}")
    lines, ok = [], True
    try:
        wheel = options.wheel.resolve() if options.wheel else build_wheel(root)
        print(f"layer: {wheel.name}")
        for name in options.app or sorted(APPS):
            app, work = APPS[name], root / name
            work.mkdir()
            base = interpreter(app, options.python)
            python = make_venv(app, work, wheel, base, work / "install.log")
            print(f"  {app.name} @ {app.commit[:12]} ({app.kind}): {versions(python)}")
            for idiom in idioms:
                result = run_idiom(app, idiom, work, python)
                ok = ok and result.failed == 0
                lines.append(result.line(app, idiom))
                print(lines[-1], flush=True)
    finally:
        if not options.keep and ok:
            shutil.rmtree(root, ignore_errors=True)
        elif not ok:
            print(f"logs kept in {root}")
    print("\n".join(["", "summary:", *lines]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
