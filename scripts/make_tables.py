"""Write one Markdown and one CSV table per task from a directory of runs.

    python scripts/make_tables.py --runs results/runs --out results/tables

Mean ± sample std over seeds; runs with ``pretrained=false`` are excluded. Output is
deterministic: rerunning on the same runs gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from equiv.aggregate import load_runs, mean_std, runs_frame, summarize

# (metric, column title, digits or None for an error magnitude) per task family.
COLUMNS = {
    "image_classification": [
        ("upright_accuracy", "upright (pretrained, no transform)", 3),
        ("zeroshot_accuracy", "zero-shot", 3),
        ("lambda_phase_accuracy", "after λ phase", 3),
        ("finetuned_accuracy", "finetuned", 3),
        ("finetuned_invariance_error", "max invariance error (finetuned)", None),
    ],
    "scan": [
        ("pretrained_val_acc", "pretrained model, val", 3),
        ("val_acc_zero_shot", "zero-shot val", 3),
        ("test_acc_zero_shot", "zero-shot test", 3),
        ("val_acc", "finetuned val", 3),
        ("test_acc", "finetuned test", 3),
        ("equivariance_agreement", "decode(g·x) = g·decode(x)", 3),
    ],
}


def cell(row, metric: str, digits: int | None) -> str:
    if f"{metric}_mean" not in row.index or row[f"{metric}_n"] == 0:
        return "—"
    if digits is None:                       # an error magnitude: the worst seed matters
        return f"{row[f'{metric}_mean']:.1e}"
    return mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], int(row[f"{metric}_n"]), digits)


def task_table(summary, columns) -> tuple[str, list[list[str]]]:
    header = ["method", "backbone", "group", *(t for _, t, _ in columns), "seeds"]
    rows = []
    for _, row in summary.iterrows():
        seeds = max(int(row[f"{m}_n"]) for m, _, _ in columns if f"{m}_n" in row.index)
        rows.append([row["method"], row["backbone"], row["group"],
                     *(cell(row, m, d) for m, _, d in columns), str(seeds)])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n", [header, *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: no runs directory {args.runs}", file=sys.stderr)
        return 2
    runs = load_runs(args.runs)
    if not runs:
        print(f"error: no complete results.json under {args.runs}", file=sys.stderr)
        return 2
    frame = runs_frame(runs)
    families = {r["task"]: r["config"]["task"]["family"] for r in runs}
    args.out.mkdir(parents=True, exist_ok=True)
    for task in sorted(families):
        columns = COLUMNS[families[task]]
        summary = summarize(frame[frame["task"] == task], [m for m, _, _ in columns])
        md, rows = task_table(summary, columns)
        source = args.runs.as_posix()
        (args.out / f"{task}.md").write_text(
            f"# {task}\n\nMean ± sample std over seeds, from `{source}` by "
            f"`python scripts/make_tables.py --runs {source} --out {args.out.as_posix()}`.\n\n"
            + md)
        with (args.out / f"{task}.csv").open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
        print(f"wrote {args.out / task}.md and .csv ({len(rows) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
