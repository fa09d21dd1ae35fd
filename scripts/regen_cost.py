"""Cost of regenerating the tables from an empty cache, from a queue workers' timing log.

    python scripts/regen_cost.py results/cost/regen-<sha>.log > results/cost/regen-<sha>.md

Each log line is one ``run.py`` process, timed by ``/usr/bin/time -f "%e %U %S"``:
``<end ISO time> rc=<code> <wall s> <user s> <sys s> <run.py arguments>``. Runs are grouped into
tables by their ``task=`` prefix. CPU time (user + sys) is what a run costs whatever else the
machine does; wall time under load is longer. ``CPU / 2`` is the two-queue wall time on a quiet
2-core machine if the queues stay busy (a lower bound on it); ``busy`` is what the queues
took here: the time during which at least one run of the table was going, so a pause between
sessions (queue stopped, resumed from the same job list) does not count.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

TABLES = (("scan_", "SCAN"), ("dqn_", "DQN"), ("fmnist_", "Fashion-MNIST"), ("digits_", "digits"))


class Run(NamedTuple):
    end: datetime
    rc: int
    wall: float
    cpu: float
    args: str


def parse(line: str) -> Run:
    end, rc, wall, user, system, *args = line.split()
    return Run(datetime.fromisoformat(end.replace("Z", "+00:00")), int(rc.removeprefix("rc=")),
               float(wall), float(user) + float(system), " ".join(args))


def table_of(run: Run) -> str:
    task = next((a.removeprefix("task=") for a in run.args.split() if a.startswith("task=")), "")
    return next((name for prefix, name in TABLES if task.startswith(prefix)), task or "?")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f}"


def busy_seconds(runs: list[Run]) -> float:
    """Length of the union of the runs' [start, end] intervals."""
    total, reached = 0.0, None
    for start, end in sorted((r.end - timedelta(seconds=r.wall), r.end) for r in runs):
        if reached is None or start > reached:
            total, reached = total + (end - start).total_seconds(), end
        elif end > reached:
            total, reached = total + (end - reached).total_seconds(), end
    return total


def report(runs: list[Run]) -> str:
    by_table: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_table[table_of(run)].append(run)
    lines = ["| table | runs | failed | CPU-min (user + sys) | process wall-min | CPU / 2 (min) "
             "| busy here (min) |", "|---|---|---|---|---|---|---|"]
    for name, group in [*by_table.items(), ("all", runs)]:
        cpu = sum(r.cpu for r in group)
        lines.append(f"| {name} | {len(group)} | {sum(r.rc != 0 for r in group)} | {minutes(cpu)} "
                     f"| {minutes(sum(r.wall for r in group))} | {minutes(cpu / 2)} "
                     f"| {minutes(busy_seconds(group))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path, help="the workers' timing log")
    args = parser.parse_args(argv)
    try:
        text = args.log.read_text()
    except OSError as exc:
        print(f"regen_cost: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
        return 2
    runs = [parse(line) for line in text.splitlines() if line.strip()]
    if not runs:
        print(f"regen_cost: {args.log} has no runs", file=sys.stderr)
        return 2
    sys.stdout.write(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
