"""Shared pieces of the benchmarks: a Markdown section and a wall-clock timer."""

from __future__ import annotations

import json
import os
import tempfile
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


def peak_allocated_mb(fn: Callable[[], object]) -> float:
    """Peak bytes of CPU tensor memory allocated inside ``fn`` and alive at once (the torch
    profiler's "Total Allocated" memory events; memory allocated before, e.g. the weights, is
    not counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"
              and e.get("args", {}).get("Device Type", 0) == 0]
    return max(totals, default=0) / 2**20
