"""Draw the paper's figures from a directory of runs, one PNG and one PDF per figure.

    python scripts/make_plots.py --runs results/runs --out results/figures

Mean ± sample std over seeds; runs with ``pretrained=false`` are excluded. Output is
deterministic: rerunning on the same runs gives byte-identical files. Torch is never imported,
so the script starts in seconds on a machine busy with training.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style

matplotlib.use("Agg")  # headless and pixel-deterministic, whatever the user's default backend

import pandas as pd
from matplotlib.figure import Figure

from equiv.aggregate import load_runs

Run = dict[str, Any]

STAT_COLUMNS = ["backbone", "method", "step", "mean", "std", "n"]
# Cell types in legend order with fixed colours, so a colour means the same cell in every figure.
CELL_COLORS = {"LSTM": "tab:blue", "GRU": "tab:orange", "RNN": "tab:green"}
SPARE_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
# Without these, matplotlib embeds its version and a timestamp or random salt in the files.
RC = {"svg.hashsalt": "equiv"}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Producer": None}


class SkipFigure(Exception):
    """Raised by a figure function when the runs cannot make that figure; the message says why."""


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its file stem, the task whose runs it needs, and the function that draws it."""

    name: str
    task: str
    draw: Callable[[list[Run]], Figure]


def is_pretrained(run: Run) -> bool:
    """Random-initialisation runs are a control, not a result, so figures leave them out."""
    return bool(run.get("pretrained", True))


def cell_label(backbone: str) -> str:
    """``seq2seq_lstm`` -> ``LSTM``: the legend names the recurrent cell, not the wrapper."""
    return backbone.rsplit("_", 1)[-1].upper()


def cell_colors(labels: Iterable[str]) -> dict[str, str]:
    """Fixed colours for known cells, then spare colours for others in sorted order."""
    colors = {label: CELL_COLORS[label] for label in labels if label in CELL_COLORS}
    others = sorted(set(labels) - set(CELL_COLORS))
    for i, label in enumerate(others):
        colors[label] = SPARE_COLORS[i % len(SPARE_COLORS)]
    return colors


def curve_stats(runs: Iterable[Run], curve: str,
                methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and run count of ``curve`` per (backbone, method, step).

    Only pretrained runs count. Seeds are aligned by step, and a step is kept only if every run
    of its (backbone, method) has a finite value there, so a mean never silently averages over
    fewer seeds than the legend reports. Runs without the curve are ignored. Sorted by
    backbone, method, step.
    """
    rows = []
    for i, run in enumerate(runs):
        if not is_pretrained(run) or (methods is not None and run["method"] not in methods):
            continue
        points = {int(p["step"]): p["value"] for p in run.get("curves", {}).get(curve, [])}
        if not points:
            continue
        rows += [{"run": i, "backbone": run["backbone"], "method": run["method"], "step": step,
                  "value": float(value) if value is not None else float("nan")}
                 for step, value in points.items()]
    frame = pd.DataFrame(rows, columns=["run", "backbone", "method", "step", "value"])
    group = ["backbone", "method"]
    n_runs = frame.groupby(group)["run"].transform("nunique")
    finite = frame.dropna(subset=["value"])
    n_finite = finite.groupby([*group, "step"])["run"].transform("nunique")
    aligned = finite[n_finite == n_runs.loc[finite.index]]
    if aligned.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    stats = aligned.groupby([*group, "step"], sort=True)["value"].agg(["mean", "std", "count"])
    stats = stats.rename(columns={"count": "n"}).reset_index()
    return stats[STAT_COLUMNS].reset_index(drop=True)


def duplicate_seeds(runs: Iterable[Run], keys: Sequence[str]) -> list[str]:
    """Configurations holding one seed twice: runs that differ in group or other overrides."""
    seen: dict[tuple, int] = {}
    for run in runs:
        key = (*(run[k] for k in keys), run["seed"])
        seen[key] = seen.get(key, 0) + 1
    return sorted(" ".join(map(str, key)) for key, count in seen.items() if count > 1)


def scan_finetune_curve(runs: list[Run]) -> Figure:
    """Test accuracy vs finetuning examples: does equizero's zero-shot lead survive finetuning?"""
    methods = {"equizero": "-", "equitune": ":"}
    runs = [r for r in runs if r["method"] in methods and is_pretrained(r)]
    duplicates = duplicate_seeds(runs, ("backbone", "method"))
    if duplicates:  # averaging them would mix configurations under one legend entry
        raise SkipFigure(f"several runs for one seed ({', '.join(duplicates)}); "
                         "point --runs at one configuration per backbone and method")
    stats = curve_stats(runs, "test_acc", tuple(methods))
    if stats.empty:
        raise SkipFigure("no equizero or equitune runs with a test_acc curve")
    backbones = stats["backbone"].unique().tolist()
    colors = cell_colors(cell_label(b) for b in backbones)
    order = {label: i for i, label in enumerate(CELL_COLORS)}
    backbones.sort(key=lambda b: (order.get(cell_label(b), len(order)), cell_label(b), b))

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for backbone in backbones:
        label = cell_label(backbone)
        for method, linestyle in methods.items():
            s = stats[(stats["backbone"] == backbone) & (stats["method"] == method)]
            if s.empty:
                continue
            n = int(s["n"].max())
            color = colors[label]
            ax.plot(s["step"], s["mean"], linestyle=linestyle, color=color, linewidth=1.8,
                    marker="o", markersize=3,
                    label=f"{label} {method} ({n} seed{'s' if n != 1 else ''})")
            if n >= 2:
                ax.fill_between(s["step"], s["mean"] - s["std"], s["mean"] + s["std"],
                                color=color, alpha=0.15, linewidth=0)
    steps = sorted(stats["step"].unique().tolist())
    if len(steps) <= 12:  # tick the evaluation points themselves (0, 400, ...) when few
        ax.set_xticks(steps)
    ax.set_title("Equizero vs. equitune for few-shot learning (SCAN Add Jump)")
    ax.set_xlabel("finetuning examples seen (the paper's batch-1 iterations)")
    ax.set_ylabel("test exact-match accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


FIGURES = (
    FigureSpec("scan_finetune_curve", "scan_add_jump", scan_finetune_curve),
)


def save(fig: Figure, out: Path, name: str) -> list[Path]:
    """PNG for viewing and PDF for the paper, both free of timestamps and version stamps."""
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=150, metadata=PNG_METADATA)
    fig.savefig(pdf, metadata=PDF_METADATA)
    return [png, pdf]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no runs directory {args.runs}", file=sys.stderr)
        return 2
    runs = load_runs(args.runs)
    if not runs:
        print(f"error: no complete results.json under {args.runs}", file=sys.stderr)
        return 2
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        for spec in FIGURES:
            task_runs = [r for r in runs if r.get("task") == spec.task and is_pretrained(r)]
            if not task_runs:
                print(f"skipped {spec.name}: no pretrained runs for task {spec.task}")
                continue
            try:
                fig = spec.draw(task_runs)
            except SkipFigure as note:
                print(f"skipped {spec.name}: {note}")
                continue
            args.out.mkdir(parents=True, exist_ok=True)
            png, pdf = save(fig, args.out, spec.name)
            print(f"wrote {png} and {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
