"""The steps of `python -m backend check`, and how they are shown: ✔/✘ lines, or JSON."""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import Any, Literal, TypeVar

Status = Literal["pass", "warn", "fail", "skip"]
MARKS: dict[Status, str] = {"pass": "✔", "warn": "⚠", "fail": "✘", "skip": "-"}
T = TypeVar("T")

# Exit codes: every check passed (warnings allowed), or one failed. A setting that is invalid
# is backend.cli.BAD_SETTING (3): then nothing could be checked.
PASSED, FAILED = 0, 1


@dataclass
class Step:
    """One check: its verdict, what was found, and (for ✘ and ⚠) the setting to change."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    ms: float | None = None


def timed(work: Callable[[], T]) -> tuple[T, float]:
    started = perf_counter()
    result = work()
    return result, (perf_counter() - started) * 1000


class Report:
    """The steps in the order they ran; each is shown (`show`) as soon as it is added."""

    def __init__(self, show: Callable[[Step], None] = lambda step: None) -> None:
        self.steps: list[Step] = []
        self._show = show

    def add(self, step: Step, ms: float | None = None) -> Step:
        if ms is not None:
            step.ms = round(ms, 3)
        self.steps.append(step)
        self._show(step)
        return step

    def skip(self, names: list[str], why: str) -> None:
        for name in names:
            self.add(Step(name, "skip", f"skipped: {why}"))

    @property
    def exit_code(self) -> int:
        return FAILED if any(step.status == "fail" for step in self.steps) else PASSED

    def summary(self) -> str:
        failed = sum(step.status == "fail" for step in self.steps)
        warned = sum(step.status == "warn" for step in self.steps)
        warnings = f" ({warned} warning{'s' * (warned != 1)})" if warned else ""
        if failed:
            return f"✘ {failed} check{'s' * (failed != 1)} failed{warnings}: fix what they say"
        return f"✔ nothing failed{warnings}"

    def as_json(self, **extra: Any) -> dict[str, Any]:
        return {
            "ok": self.exit_code == PASSED,
            "exit_code": self.exit_code,
            **extra,
            "steps": [asdict(step) for step in self.steps],
        }


NAME_WIDTH = 20


def as_line(step: Step) -> str:
    """`✔ tls                    4.2 ms  TLSv1.3 …`, and the fix on a line of its own."""
    took = f"{step.ms:8.1f} ms" if step.ms is not None else " " * 11
    line = f"{MARKS[step.status]} {step.name:<{NAME_WIDTH}} {took}  {step.detail}"
    if step.fix and step.status in ("fail", "warn"):
        line += f"\n{'':<{NAME_WIDTH + 15}}fix: {step.fix}"
    return line
