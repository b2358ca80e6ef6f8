"""Print a pip constraints file pinning each direct dependency to its declared floor.

    python3 .ci/floors.py [EXTRA ...] > floors.txt
    pip install -e '.[dev]' -c floors.txt

It reads [project].dependencies and the optional-dependencies of the extras named on the
command line (an extra naming this project, as `backend[embedded]`, brings that extra's too)
from pyproject.toml, and pins `name==floor` for every `>=floor` (or `~=floor`) specifier.
Exact pins (`==`) are skipped: they already pin. A requirement without a lower bound is
reported on stderr and left to pip, as are the transitive dependencies (Starlette comes from
what the floor of FastAPI allows). Stdlib only, so CI runs it before any venv exists.
"""

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# PEP 508, as far as pyproject dependencies use it: name, [extras], specifiers, ; marker.
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*"
    r"(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"(?P<specs>[^;]*?)\s*"
    r"(?:;\s*(?P<marker>.+?))?\s*$"
)
SPECIFIER = re.compile(r"^\s*(?P<op>~=|===|==|!=|<=|>=|<|>)\s*(?P<version>\S+?)\s*$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(project: dict[str, object], extras: list[str]) -> list[str]:
    """The project's dependencies and those of `extras`, self-references expanded."""
    optional = project.get("optional-dependencies", {})
    assert isinstance(optional, dict)
    own = normalize(str(project["name"]))
    found: list[str] = list(project.get("dependencies", []))  # type: ignore[call-overload]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            sys.exit(f"floors.py: no extra {extra!r} in {PYPROJECT.name}")
        for line in optional[extra]:
            match = REQUIREMENT.match(line)
            if match and normalize(match["name"]) == own:
                todo.extend(e.strip() for e in (match["extras"] or "").split(",") if e.strip())
            else:
                found.append(line)
    return found


def floor(line: str) -> str | None:
    """`name==floor[; marker]` for `line`, or None when it is pinned or has no floor."""
    match = REQUIREMENT.match(line)
    if not match:
        sys.exit(f"floors.py: cannot read the requirement {line!r}")
    specs = [s for s in match["specs"].split(",") if s.strip()]
    lower = None
    for spec in specs:
        parsed = SPECIFIER.match(spec)
        if not parsed:
            sys.exit(f"floors.py: cannot read the specifier {spec!r} in {line!r}")
        if parsed["op"] in ("==", "==="):
            return None  # an exact pin pins already
        if parsed["op"] in (">=", "~="):
            lower = parsed["version"]
    if lower is None:
        print(f"floors.py: {line!r} declares no floor: left to pip", file=sys.stderr)
        return None
    marker = f" ; {match['marker']}" if match["marker"] else ""
    return f"{normalize(match['name'])}=={lower}{marker}"


def main(extras: list[str]) -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pins: dict[str, str] = {}
    for line in requirements(project, extras):
        pin = floor(line)
        if pin is not None:
            pins.setdefault(pin.split("==")[0], pin)
    print(f"# The declared floors of {project['name']} (extras: {' '.join(extras) or 'none'})")
    for pin in pins.values():
        print(pin)


if __name__ == "__main__":
    main(sys.argv[1:])
