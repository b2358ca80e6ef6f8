"""The targets table: each ratio of this one run next to its goal, or shown with none."""

from dataclasses import dataclass


@dataclass
class Target:
    name: str
    goal: str  # "" for a ratio shown without a goal
    measured: float | None  # None: not measured in this run
    met: bool
    note: str = ""

    def line(self, width: int = 60) -> str:
        figure = "skipped" if self.measured is None else f"{self.measured:.2f}"
        if self.note:
            figure = self.note
        judged = self.goal and (self.measured is not None or self.note)
        verdict = ("met" if self.met else "NOT MET") if judged else ""
        return f"  {self.name:{width}} {self.goal:>8} {figure:>8}  {verdict}".rstrip()


def at_least(name: str, goal: float, measured: float | None) -> Target:
    met = measured is not None and measured >= goal
    return Target(name, f">= {goal:.2f}", measured, met)


def at_most(name: str, goal: float, measured: float | None) -> Target:
    met = measured is not None and measured <= goal
    return Target(name, f"<= {goal:.2f}", measured, met)


def shown(name: str, measured: float | None) -> Target:
    """A ratio printed with the targets, with no goal of its own."""
    return Target(name, "", measured, True)


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs and theirs == theirs else float("inf")


def over(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None where either was not measured in this run."""
    return None if ours is None or theirs is None else ratio(ours, theirs)


def print_targets(targets: list[Target]) -> None:
    width = max((len(target.name) for target in targets), default=0)
    print("\ntargets (ratios from this one run)")
    print(f"  {'':{width}} {'target':>8} {'measured':>8}")
    for target in targets:
        print(target.line(width))
