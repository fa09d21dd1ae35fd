"""Shared pieces of the benchmarks: a Markdown section and a wall-clock timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Section:
    """One benchmark's Markdown: a title, settings, a table and notes."""

    title: str
    settings: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", *(f"- {s}" for s in self.settings), ""]
        if self.header:
            lines += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
            lines += ["| " + " | ".join(r) + " |" for r in self.rows]
            lines.append("")
        lines += [*self.notes, ""] if self.notes else []
        return "\n".join(lines)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def peak_rss_mb(fn: Callable[[], object]) -> float:
    """Peak resident set size (MB) of this process while ``fn`` runs (Linux; NaN elsewhere).

    The kernel's high-water mark is reset first (``clear_refs`` 5), so the figure covers ``fn``
    only, on top of what the process already holds (the models)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    fn()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
