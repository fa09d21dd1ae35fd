"""Write one Markdown and one CSV table per task from a directory of runs.

    python scripts/make_tables.py --runs results/runs --out results/tables

Mean ± sample std over seeds; runs with ``pretrained=false`` are excluded. The DQN tasks share
one table, ``dqn.md`` (environment × method). Output is deterministic: rerunning on the same
runs gives byte-identical files.
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
    "dqn": [
        ("pretrained_return", "pretrained DQN, its own (restricted) setting", None),
        ("return_zero_shot", "zero-shot", None),
        ("return_finetuned", "finetuned", None),
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


DQN_NOTE = (
    " Returns are mean greedy returns over fixed evaluation episodes (the same for every method"
    " and seed). The pretrained DQN (one cached run per environment) is evaluated in the"
    " restricted setting it was trained in (Gridworld goals in the top-left 3×3 block, CartPole"
    " and Acrobot starting on the right); zero-shot and finetuned returns are on the full,"
    " symmetric distribution (Gridworld goals anywhere, starts on either side).")


def cell(row, metric: str, digits: int | None) -> str:
    if f"{metric}_mean" not in row.index or row[f"{metric}_n"] == 0:
        return "—"
    if digits is None:                       # an error magnitude: the worst seed matters
        return f"{row[f'{metric}_mean']:.1e}"
    return mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], int(row[f"{metric}_n"]), digits)


DQN_ENVS = ("dqn_gridworld", "dqn_cartpole", "dqn_acrobot")   # table order


def return_cell(row, metric: str) -> str:
    """A return with 3 decimals for small-scale rewards (Gridworld), 1 for CartPole/Acrobot;
    a value shared by every seed (the one cached pretraining) without its zero std."""
    if f"{metric}_mean" not in row.index or row[f"{metric}_n"] == 0:
        return "—"
    mean, std, n = row[f"{metric}_mean"], row[f"{metric}_std"], int(row[f"{metric}_n"])
    digits = 3 if abs(mean) < 10 else 1
    return mean_std(mean, 0.0 if std == 0 else std, 1 if std == 0 else n, digits)


def dqn_table(summary, columns) -> tuple[str, list[list[str]]]:
    """Environment × method: the pretrained DQN's return in its restricted setting, then the
    wrapped Q-network's zero-shot and finetuned returns on the full distribution."""
    header = ["env", "backbone", "group", "method", *(t for _, t, _ in columns), "seeds"]
    order = {task: i for i, task in enumerate(DQN_ENVS)}
    summary = summary.assign(_env=summary["task"].map(lambda t: order.get(t, len(order))))
    summary = summary.sort_values(["_env", "task"], kind="stable")
    rows = []
    for _, row in summary.iterrows():
        seeds = max(int(row[f"{m}_n"]) for m, _, _ in columns if f"{m}_n" in row.index)
        rows.append([row["task"].removeprefix("dqn_"), row["backbone"], row["group"],
                     row["method"], *(return_cell(row, m) for m, _, _ in columns), str(seeds)])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n", [header, *rows]


SCAN_CELLS = ("seq2seq_rnn", "seq2seq_gru", "seq2seq_lstm")         # table order
SCAN_NOTE = (
    " Exact-match accuracy. \"finetuned\" is the evaluation with the best validation accuracy"
    " along finetuning, step 0 included (so it equals zero-shot where finetuning never"
    " improved validation); each run's `test_acc_last` and curves show the last one. The"
    " pretrained model is one cached run per split and cell, shared by every method and seed.")


def scan_table(summary, columns) -> tuple[str, list[list[str]]]:
    """Split × cell × method in one table (the paper's SCAN table layout)."""
    header = ["split", "cell", "group", "method", *(t for _, t, _ in columns), "seeds"]
    cells = {b: i for i, b in enumerate(SCAN_CELLS)}
    summary = summary.assign(_cell=summary["backbone"].map(lambda b: cells.get(b, len(cells))))
    summary = summary.sort_values(["task", "_cell", "backbone"], kind="stable")
    rows = []
    for _, row in summary.iterrows():
        seeds = max(int(row[f"{m}_n"]) for m, _, _ in columns if f"{m}_n" in row.index)
        rows.append([row["task"].removeprefix("scan_"),
                     row["backbone"].removeprefix("seq2seq_").upper(), row["group"],
                     row["method"], *(cell(row, m, d) for m, _, d in columns), str(seeds)])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n", [header, *rows]


def write_table(out: Path, name: str, intro: str, md: str, rows: list[list[str]]) -> None:
    (out / f"{name}.md").write_text(f"# {name}\n\n{intro}\n\n{md}")
    with (out / f"{name}.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    print(f"wrote {out / name}.md and .csv ({len(rows) - 1} rows)")


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
    source = args.runs.as_posix()
    intro = (f"Mean ± sample std over seeds, from `{source}` by "
             f"`python scripts/make_tables.py --runs {source} --out {args.out.as_posix()}`.")
    for task in sorted(t for t, family in families.items() if family not in ("dqn", "scan")):
        if families[task] not in COLUMNS:
            print(f"skipped {task}: no table layout for task family {families[task]!r}")
            continue
        columns = COLUMNS[families[task]]
        summary = summarize(frame[frame["task"] == task], [m for m, _, _ in columns])
        write_table(args.out, task, intro, *task_table(summary, columns))
    dqn_tasks = sorted(t for t, family in families.items() if family == "dqn")
    if dqn_tasks:
        columns = COLUMNS["dqn"]
        summary = summarize(frame[frame["task"].isin(dqn_tasks)], [m for m, _, _ in columns])
        write_table(args.out, "dqn", intro + DQN_NOTE, *dqn_table(summary, columns))
    scan_tasks = sorted(t for t, family in families.items() if family == "scan")
    if scan_tasks:
        columns = COLUMNS["scan"]
        summary = summarize(frame[frame["task"].isin(scan_tasks)], [m for m, _, _ in columns])
        write_table(args.out, "scan", intro + SCAN_NOTE, *scan_table(summary, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
