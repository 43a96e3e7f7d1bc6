"""Result rows and tables: case, baseline, ours, ratio, target, met?

Every figure is shown next to its baseline measured in the same run, because the machine
is shared and absolute numbers move with its load; the ratio is what carries over.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

#: How the ratio column reads: "faster" is baseline/ours (for durations), "of" is
#: ours/baseline (rates, memory, delays).
RatioKind = Literal["faster", "of", "sooner"]


@dataclass(frozen=True)
class Row:
    """One comparison: a figure of ours against its baseline, and the target if any."""

    case: str
    baseline: float | None
    ours: float
    unit: str  # "s", "ms", "/s", "MiB", "min", ...
    kind: RatioKind = "of"
    target: str = ""
    met: bool | None = None  # None: no target for this row
    note: str = ""

    def judged(self, met: bool) -> Row:
        """This row, with whether its target was met."""
        return replace(self, met=met)

    @property
    def ratio(self) -> float | None:
        """The ratio the ``kind`` names, or None without a baseline."""
        if self.baseline is None or self.baseline == 0 or self.ours == 0:
            return None
        if self.kind in ("faster", "sooner"):
            return self.baseline / self.ours
        return self.ours / self.baseline

    def cells(self) -> list[str]:
        """The row as the six printed cells."""
        ratio = self.ratio
        if ratio is None:
            shown = "—"
        elif self.kind in ("faster", "sooner"):
            better, worse = ("faster", "slower") if self.kind == "faster" else ("sooner", "later")
            shown = f"{ratio:,.1f}x {better}" if ratio >= 1 else f"{1 / ratio:,.1f}x {worse}"
        else:
            shown = f"{ratio:.2f}x"
        met = "—" if self.met is None else ("yes" if self.met else "NO")
        baseline = "—" if self.baseline is None else number(self.baseline, self.unit)
        return [self.case, baseline, number(self.ours, self.unit), shown, self.target or "—", met]


@dataclass
class Table:
    """One section's result: a title, rows, and notes printed under the rows."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        """Append ``row`` and return it."""
        self.rows.append(row)
        return row

    def text(self) -> str:
        """The table for a terminal."""
        header = ["case", "baseline", "ours", "ratio", "target", "met?"]
        lines = [r.cells() for r in self.rows]
        widths = [max(len(c[i]) for c in [header, *lines]) for i in range(len(header))]
        out = [
            f"\n== {self.title} ==",
            _line(header, widths),
            _line(["-" * w for w in widths], widths),
        ]
        out += [_line(cells, widths) for cells in lines]
        out += [f"  * {note}" for note in self.notes]
        return "\n".join(out)

    def markdown(self) -> str:
        """The table as GitHub Markdown."""
        out = [f"### {self.title}", "", "| case | baseline | ours | ratio | target | met? |"]
        out.append("|---|---:|---:|---:|---|---|")
        out += [
            "| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in self.rows
        ]
        if self.notes:
            out.append("")
            out += [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    first, *rest = cells
    return "  ".join(
        [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
    )


def number(value: float, unit: str) -> str:
    """A figure with its unit, with as many digits as it deserves."""
    if unit == "s" and value < 1:
        return f"{value * 1000:,.1f} ms"
    if unit == "/s":
        return f"{value:,.0f}/s"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:,.{digits}f} {unit}".rstrip()


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` calls of ``measure``."""
    return statistics.median(measure() for _ in range(runs))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
