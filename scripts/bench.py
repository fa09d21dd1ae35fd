"""Benchmarks of the hot paths, each a ratio measured side by side in one process.

    python scripts/bench.py                      # every benchmark -> results/benchmarks.md
    python scripts/bench.py --only scan --scan-loop-sample 300   # replaces only that section

Absolute times on shared CPU machines are noise; the ratios (both sides timed in the same
process, one after the other) are the result. The "loop" sides re-implement the authors'
approach (one example, one group element, batch 1 at a time), never their code. The sections
live in ``scripts/benchmarks/``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before torch: see equiv.runner.limit_cpu_threads
os.environ.setdefault("MKL_NUM_THREADS", "1")

# glibc serves large blocks by mmap, below a threshold it moves as blocks are freed, so whether a
# tensor's pages are faulted in afresh on every call depended on the history of the process: the
# same small-CNN comparison gave 0.95-1.20 from run to run. Large blocks from the heap make it
# reproducible (1.02-1.04 for the same code). glibc reads these at start-up, hence the re-exec.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in ALLOCATOR.items()):
    os.environ.update(ALLOCATOR)
    os.execv(sys.executable, [sys.executable, *sys.argv])

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scripts.benchmarks import MODULES  # noqa: E402
from scripts.benchmarks.common import Section  # noqa: E402


def header() -> str:
    return "\n".join([
        "# Benchmarks", "",
        "Written by `scripts/bench.py` (each section names the command that wrote it); every "
        "ratio is measured in one process, both sides one after the other.", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.platform(terse=True)}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s)",
        "- glibc allocator: " + ", ".join(f"{k}={v}" for k, v in ALLOCATOR.items())
        + " (set by bench.py: large blocks from the heap, see its source)", ""])


def commit() -> str:
    """The checked-out commit, ``+dirty`` if code (anything but ``results/`` and Markdown) has
    uncommitted changes: what was measured, not the benchmark file being written."""
    from equiv.results import git_dirty, git_sha

    sha = git_sha(ROOT)
    if sha is None:
        return "unknown"
    return f"`{sha[:7]}`" + ("+dirty" if git_dirty(ROOT, ignore=("results", "*.md")) else "")


def sections_of(text: str) -> dict[str, str]:
    """The ``## `` sections of a benchmarks file by title (what ``--only`` leaves in place)."""
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return {part.splitlines()[0][3:].strip(): part.rstrip("\n") + "\n"
            for part in parts if part.startswith("## ")}


def merge(old: str, new: list[Section]) -> str:
    """Replace the sections that were rerun, keep the others in their place, append new ones."""
    kept = sections_of(old)
    fresh = {s.title: s.markdown() for s in new}
    ordered = [fresh.pop(title, body) for title, body in kept.items()] + list(fresh.values())
    return header() + "\n" + "\n".join(ordered)


def main(argv: list[str] | None = None) -> int:
    modules = {name: importlib.import_module(path) for name, path in MODULES.items()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(modules), action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks.md")
    for module in modules.values():
        module.add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    command = " ".join(["python scripts/bench.py", *argv])
    sections = []
    for name in args.only or sorted(modules):
        section = modules[name].bench(args)
        section.settings.insert(0, f"written by `{command}` on {date.today().isoformat()} "
                                   f"at commit {commit()}")
        sections.append(section)
    # Sections this run did not write stay: other modules' (with --only) and the hand-written
    # profile notes ("## Profiles and fixes"), which record before/after of past changes.
    old = args.out.read_text() if args.out.exists() else ""
    text = merge(old, sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
