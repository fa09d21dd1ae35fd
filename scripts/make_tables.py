"""Write one Markdown, CSV and LaTeX table per task from a directory of runs.

    python scripts/make_tables.py --runs results/runs --out results/tables
    python scripts/make_tables.py --wandb ENTITY/PROJECT --out results/tables   # runs from W&B

Mean ± sample std over seeds; runs with ``pretrained=false`` are excluded. The DQN tasks share
one table, ``dqn.md`` (environment × method), as do the SCAN tasks. Tables the paper has numbers
for (``equiv/data/paper_numbers.csv``: CLIP zero-shot and finetuning, the pretrained CNNs on
rot90-CIFAR10, NLG race-respect) get a "(paper)" column beside each of ours, and a row for every
paper configuration, whose own columns read "not run" when no run matches it. Output is
deterministic: rerunning on the same runs gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from equiv.aggregate import METHOD_ORDER, config_get, load_runs, mean_std, runs_frame, summarize
from equiv.paper_numbers import PAPER_FILE, load_paper

NOT_RUN = "not run"

# (metric, column title, digits or None for an error magnitude) per task family.
COLUMNS = {
    "image_classification": [
        ("upright_accuracy", "upright (pretrained, no transform)", 3),
        ("zeroshot_accuracy", "zero-shot", 3),
        ("after_phase_accuracy", "after phase (λ / canonicalizer)", 3),
        ("finetuned_accuracy", "finetuned", 3),
        ("finetuned_invariance_error", "max invariance error (finetuned)", None),
    ],
    "dqn": [
        ("pretrained_return", "pretrained DQN, its own (restricted) setting", None),
        ("return_zero_shot", "zero-shot", None),
        ("return_after_phase", "after phase (λ / canonicalizer)", None),
        ("return_finetuned", "finetuned", None),
    ],
    "scan": [
        ("pretrained_val_acc", "pretrained model, val", 3),
        ("test_view_ceiling", "view ceiling (test)", 3),
        ("val_acc_zero_shot", "zero-shot val", 3),
        ("test_acc_zero_shot", "zero-shot test", 3),
        ("val_acc_after_phase", "after phase val", 3),     # λ's or the canonicalizer's phase
        ("test_acc_after_phase", "after phase test", 3),
        ("val_acc", "finetuned val", 3),
        ("test_acc", "finetuned test", 3),
        ("equivariance_agreement", "decode(g·x) = g·decode(x)", 3),
    ],
}

# Shown only for tasks whose runs record them: image tasks over an interpolated group (rot45).
APPROXIMATE_GROUP_COLUMNS = [
    ("finetuned_invariance_error_exact", "max invariance error, exact elements (finetuned)", None),
    ("upright_masked_accuracy", "upright, masked to the disc", 3),
]
APPROXIMATE_GROUP_NOTE = (
    " Over an interpolated group (rot45: 45° turns by bilinear interpolation, every view masked"
    " to the inscribed disc) \"max invariance error\" is over all its elements, interpolation"
    " included; the \"exact elements\" column is over the quarter turns alone (rounding only);"
    " \"upright, masked to the disc\" is the pretrained backbone on upright test images under"
    " the mask every view gets.")


DQN_NOTE = (
    " Returns are mean greedy returns over fixed evaluation episodes (the same for every method"
    " and seed). The pretrained DQN (one cached run per environment and pretraining seed) is"
    " evaluated in the restricted setting it was trained in (Gridworld goals in the top-left 3×3"
    " block, CartPole and Acrobot starting on the right); zero-shot, after-phase and finetuned"
    " returns are on the full, symmetric distribution (Gridworld goals anywhere, starts on either"
    " side). λ-equitune's zero-shot column has its untrained λ; its \"after phase\" is after"
    " fitting λ alone (backbone frozen) to the pretrained Q-values on the pretrained agent's own"
    " experience in the restricted setting, before finetuning. Canonicalization's zero-shot is"
    " after its prior phase (the canonicalizer taught that those restricted states are"
    " canonical), its \"after phase\" after the canonicalizer phase on the same experience.")


def cell(row, metric: str, digits: int | None) -> str:
    if f"{metric}_mean" not in row.index or row[f"{metric}_n"] == 0:
        return "—"
    if digits is None:                       # an error magnitude: the worst seed matters
        return f"{row[f'{metric}_max']:.1e}"
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
    wrapped Q-network's zero-shot, after-λ-phase (λ-equitune) and finetuned returns on the full
    distribution."""
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
SCAN_ORACLE = "oracle (in-training view)"
SCAN_NOTE = (
    " Exact-match accuracy. \"view ceiling\": the share of test commands with a view g·x (g in"
    " the row's group) in the split's training file, the most any view selection can hand to"
    " the pretrained model in its own distribution (pure data). The \"oracle\" row of each"
    " split, cell and group decodes those in-training views with the pretrained model and maps"
    " the output back by g⁻¹ (a command counts as solved if one of them decodes right, as wrong"
    " if it has none), in the zero-shot test column: an upper reference for view selection."
    " λ-equitune's \"zero-shot\" is with its untrained λ-network, \"after phase\" after"
    " training λ alone (backbone frozen), where its finetuning starts; canonicalize's"
    " \"zero-shot\" is with its canonicalizer fitted to the prior alone (every training command"
    " is its own canonical view), \"after phase\" after training the canonicalizer on the task"
    " loss and the prior (backbone frozen). \"finetuned\" is the"
    " evaluation with the best validation accuracy along finetuning, step 0 included (so it"
    " equals the starting point where finetuning never improved validation); each run's"
    " `test_acc_last` and curves show the last one. The pretrained model is one cached run per"
    " split, cell and seed, shared by the methods.")


# One "after phase" column for λ-equitune's λ phase and canonicalization's canonicalizer phase
# (a run has at most one of them): column -> the metrics it takes, per family (CLIP's as the
# image family's).
AFTER_PHASE = {
    "after_phase_accuracy": ("lambda_phase_accuracy", "canonicalizer_phase_accuracy"),
    "return_after_phase": ("return_lambda_phase", "return_canonicalizer_phase"),
    "val_acc_after_phase": ("val_acc_lambda_phase", "val_acc_canonicalizer_phase"),
    "test_acc_after_phase": ("test_acc_lambda_phase", "test_acc_canonicalizer_phase"),
}


def with_after_phase(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with the AFTER_PHASE metrics whose sources it has (the first one set)."""
    metrics = run.get("metrics", {})
    found = {column: next(v for s in sources if (v := metrics.get(s)) is not None)
             for column, sources in AFTER_PHASE.items()
             if any(metrics.get(s) is not None for s in sources)}
    return {**run, "metrics": {**metrics, **found}}


def scan_frame(frame, splits: dict[str, str]):
    """SCAN runs keyed by split instead of task name: ``scan_add_jump_verb4`` (the preset's name
    for Add Jump under scan_verb4) and ``scan_add_jump group=scan_verb4`` share rows."""
    return frame.assign(task=frame["task"].map(lambda t: splits.get(t, t.removeprefix("scan_"))))


def oracle_rows(frame, columns) -> dict[tuple[str, str, str], list[str]]:
    """Per (split, backbone, group): the oracle's test exact match, mean ± std over seeds (its
    methods' runs of one seed decode the same pretrained model: averaged first)."""
    if "test_acc_oracle" not in frame.columns:
        return {}
    frame = frame[frame["pretrained"].astype(bool) & frame["test_acc_oracle"].notna()]
    per_seed = frame.groupby(["task", "backbone", "group", "seed"])[
        ["test_acc_oracle", "test_view_ceiling"]].mean().reset_index()
    rows = {}
    for (split, backbone, group), part in per_seed.groupby(["task", "backbone", "group"]):
        values = {"test_acc_zero_shot": stat_cell(part["test_acc_oracle"].tolist(), 3),
                  "test_view_ceiling": constant_cell(part["test_view_ceiling"].tolist())}
        rows[(split, backbone, group)] = [
            split, backbone.removeprefix("seq2seq_").upper(), group, SCAN_ORACLE,
            *(values.get(m, "—") for m, _, _ in columns), str(len(part))]
    return rows


def constant_cell(values: Sequence[float], digits: int = 3) -> str:
    """A value every seed shares (the view ceiling is data) without a ``± 0.000``."""
    values = [v for v in values if v == v]
    if not values:
        return "—"
    return f"{values[0]:.{digits}f}" if len(set(values)) == 1 else stat_cell(values, digits)


def scan_cell(row, metric: str, digits: int | None) -> str:
    """As ``cell``; the view ceiling, data every seed shares, without its ``± 0.000``."""
    if metric == "test_view_ceiling" and f"{metric}_std" in row.index \
            and row[f"{metric}_n"] > 1 and row[f"{metric}_std"] == 0:
        return constant_cell([row[f"{metric}_mean"]], digits or 3)
    return cell(row, metric, digits)


def scan_table(summary, columns, oracles: dict[tuple[str, str, str], list[str]] | None = None,
               ) -> tuple[str, list[list[str]]]:
    """Split × group × cell × method in one table (the paper's SCAN table layout), each
    (split, group, cell) block closed by its oracle row."""
    header = ["split", "cell", "group", "method", *(t for _, t, _ in columns), "seeds"]
    oracles = dict(oracles or {})
    cells = {b: i for i, b in enumerate(SCAN_CELLS)}
    summary = summary.assign(_cell=summary["backbone"].map(lambda b: cells.get(b, len(cells))))
    summary = summary.sort_values(["task", "group", "_cell", "backbone"], kind="stable")
    rows = []
    for block, part in summary.groupby(["task", "group", "_cell", "backbone"], sort=False):
        for _, row in part.iterrows():
            seeds = max(int(row[f"{m}_n"]) for m, _, _ in columns if f"{m}_n" in row.index)
            rows.append([row["task"], row["backbone"].removeprefix("seq2seq_").upper(),
                         row["group"], row["method"], *(scan_cell(row, m, d)
                                                        for m, _, d in columns), str(seeds)])
        oracle = oracles.pop((block[0], block[3], block[1]), None)
        if oracle is not None:
            rows.append(oracle)
    rows += [oracles[k] for k in sorted(oracles)]           # oracles of blocks without rows
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n", [header, *rows]


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "λ": r"$\lambda$", "—": "---",
                 "·": r"$\cdot$", "×": r"$\times$", "°": r"$^\circ$", "≈": r"$\approx$",
                 "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular (the symbols our tables use become math)."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(name: str, rows: list[list[str]]) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); the first row is the header."""
    header, *body = rows
    lines = [f"% {name}: generated by scripts/make_tables.py; needs \\usepackage{{booktabs}}",
             r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(out: Path, name: str, intro: str, md: str, rows: list[list[str]]) -> None:
    (out / f"{name}.md").write_text(f"# {name}\n\n{intro}\n\n{md}")
    with (out / f"{name}.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    (out / f"{name}.tex").write_text(latex_table(name, rows))
    print(f"wrote {out / name}.md, .csv and .tex ({len(rows) - 1} rows)")


def markdown(rows: list[list[str]]) -> str:
    header, *body = rows
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(md) + "\n"


# --- the paper's numbers beside ours ------------------------------------------------------------

PAPER_KEYS = ("task", "dataset", "backbone", "method", "variant", "demographic", "step")


def paper_cell(paper: list[dict[str, str]], table: str, metric: str, keys: dict[str, str],
               step: int | None = None) -> str:
    """The paper's number for this row and metric, or "—". A paper field "*" matches anything;
    paper fields that are not among ``keys`` (other than step) are not compared."""
    want = {**keys, "step": "" if step is None else str(step)}
    for row in paper:
        if row["table"] == table and row["metric"] == metric and all(
                row[k] in ("*", v) for k, v in want.items()):
            return row["text"]
    return "—"


class Column(NamedTuple):
    title: str
    metric: str
    digits: int | None = 3             # None: an error magnitude (worst seed, e-notation)
    step: int | None = None            # a curve's value at this step instead of a scalar metric
    paper: bool = False                # add "<title> (paper)" right after it


class Record(NamedTuple):
    """One run (or one demographic of an NLG run) reduced to its row keys and numbers."""
    keys: tuple[str, ...]
    metrics: dict[str, Any]
    curves: dict[str, list[dict[str, Any]]]


def record_value(rec: Record, col: Column) -> float | None:
    if col.step is None:
        value = rec.metrics.get(col.metric)
    else:
        points = [p["value"] for p in rec.curves.get(col.metric, []) if p["step"] == col.step]
        value = points[-1] if points else None
    return None if value is None else float(value)


def stat_cell(values: Sequence[float], digits: int | None) -> str:
    if not values:
        return "—"
    if digits is None:
        return f"{max(values):.1e}"                   # an error magnitude: the worst seed
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean_std(statistics.fmean(values), std, len(values), digits)


ORDERS = {"dataset": ("cifar100", "imagenet_v2", "cifar10"),
          "task": ("clip_rot90", "clip_flip", "clip_hflip"),
          "backbone": ("clip_rn50", "clip_rn101", "clip_vitb32", "clip_vitb16", "tv_resnet18",
                       "tv_alexnet"),
          "method": METHOD_ORDER, "variant": ("",), "demographic": ()}


def sort_key(fields: Sequence[str], key: tuple[str, ...]) -> tuple:
    out = []
    for field, value in zip(fields, key, strict=True):
        order = ORDERS.get(field, ())
        out.append((order.index(value) if value in order else len(order), value))
    return tuple(out)


def paper_table(records: list[Record], fields: Sequence[str], titles: Sequence[str],
                columns: Sequence[Column], paper: list[dict[str, str]],
                table: str) -> list[list[str]]:
    """Rows = our configurations ∪ the paper's (keyed by ``fields``); our cells "not run" for a
    paper configuration without runs."""
    keys = {r.keys for r in records}
    for row in paper:
        if row["table"] == table and all(row[f] != "*" for f in fields):
            keys.add(tuple(row[f] for f in fields))
    header = list(titles)
    for col in columns:
        header += [col.title, f"{col.title} (paper)"] if col.paper else [col.title]
    rows = [[*header, "seeds"]]
    for key in sorted(keys, key=lambda k: sort_key(fields, k)):
        mine = [r for r in records if r.keys == key]
        named = dict(zip(fields, key, strict=True))
        line = list(key)
        for col in columns:
            values = [v for r in mine if (v := record_value(r, col)) is not None]
            line.append(stat_cell(values, col.digits) if mine else NOT_RUN)
            if col.paper:
                line.append(paper_cell(paper, table, col.metric, named, col.step))
        rows.append([*line, str(len(mine))])
    return rows


def run_record(run: dict[str, Any], keys: tuple[str, ...]) -> Record:
    return Record(keys, run.get("metrics", {}), run.get("curves", {}))


CLIP_FIELDS = ("dataset", "task", "backbone", "method")
CLIP_ZEROSHOT = (Column("upright (backbone, no transform)", "upright_accuracy", paper=True),
                 Column("zero-shot", "zeroshot_accuracy", paper=True),
                 Column("after phase (λ / canonicalizer)", "after_phase_accuracy"),
                 Column("max invariance error (zero-shot)", "zeroshot_invariance_error", None))
CLIP_STEPS = (0, 1000, 2000, 3000, 4000)
CLIP_FINETUNE = (*(Column(f"step {s}", "test_accuracy", step=s, paper=True) for s in CLIP_STEPS),
                 Column("max invariance error (finetuned)", "finetuned_invariance_error", None))
PAPER_NOTE = (" \"(paper)\" columns are the paper's numbers from `equiv/data/paper_numbers.csv`"
              " (its `source` column says where each comes from), as fractions; ≈ marks a value"
              " pixel-read from a figure. \"not run\": a configuration the paper reports that"
              " has no run here.")
CLIP_NOTE = (" Top-1 accuracy, one random transformation of the task's group per test image;"
             " the paper's \"flip\" is `clip_flip` (both axes flipped, a 180° rotation)."
             " λ-equitune's zero-shot is with its untrained λ-network, canonicalize's with its"
             " canonicalizer fitted to the prior alone (upright training images are canonical);"
             " \"after phase\" after training λ or the canonicalizer (image tower frozen).")
CLIP_FINETUNE_NOTE = (" Test top-1 along finetuning on the transformed training set (the paper:"
                      " rot90-CIFAR100, Figs. 5/11); step 0 is after λ-equitune's λ phase and"
                      " canonicalize's canonicalizer phase.")


def clip_tables(runs: list[dict[str, Any]], paper: list[dict[str, str]], out: Path,
                intro: str) -> None:
    zeroshot, finetune = [], []
    for run in runs:
        if not run.get("pretrained", True) or config_get(run, "task", "family") != "clip":
            continue
        key = (str(config_get(run, "task", "dataset", default="")), run["task"], run["backbone"],
               run["method"])
        steps = config_get(run, "task", "finetune", "steps", default=0) or 0
        (finetune if steps > 0 else zeroshot).append(run_record(run, key))
    titles = ("dataset", "task", "backbone", "method")
    write_table(out, "clip_zeroshot", intro + CLIP_NOTE + PAPER_NOTE, *as_md(paper_table(
        zeroshot, CLIP_FIELDS, titles, CLIP_ZEROSHOT, paper, "clip_zeroshot")))
    write_table(out, "clip_finetune", intro + CLIP_FINETUNE_NOTE + PAPER_NOTE, *as_md(paper_table(
        finetune, CLIP_FIELDS, titles, CLIP_FINETUNE, paper, "clip_finetune")))


def as_md(rows: list[list[str]]) -> tuple[str, list[list[str]]]:
    return markdown(rows), rows


CNN_FIELDS = ("backbone", "method", "variant")
CNN_COLUMNS = (Column("zero-shot", "zeroshot_accuracy"),
               Column("epoch 1", "test_accuracy", paper=True),
               Column("finetuned (last epoch)", "finetuned_accuracy"),
               Column("epoch 10", "test_accuracy", paper=True),
               Column("max invariance error (finetuned)", "finetuned_invariance_error", None))
CNN_NOTE = (" Test top-1 on rot90-CIFAR10 (every test image rotated by its own random multiple"
            " of 90°). \"epoch k\" is the test accuracy after k epochs (the paper's plotted e0 is"
            " epoch 1); variant = equizero's proxy (the paper's legend labels, which may be swapped"
            " relative to the proxies its code used, PAPER.md §3.3).")


def cnn_table(task: str, runs: list[dict[str, Any]], paper: list[dict[str, str]], out: Path,
              intro: str) -> None:
    """A task the paper plots per epoch: our epoch-k accuracy is the curve point at step
    k × ``task.finetune.eval_every`` (one evaluation per epoch)."""
    records: list[Record] = []
    for run in runs:
        if run["task"] != task or not run.get("pretrained", True):
            continue
        proxy = str(config_get(run, "method", "proxy", default=""))
        if proxy.startswith("$") or not proxy:          # an unresolved ${task.equizero_proxy}
            proxy = str(config_get(run, "task", "equizero_proxy", default=""))
        variant = proxy if run["method"] == "equizero" else ""
        every = config_get(run, "task", "finetune", "eval_every", default=0) or 0
        curve = run.get("curves", {}).get("test_accuracy", [])
        epochs = [{"step": p["step"] // every, "value": p["value"]} for p in curve
                  if every and p["step"] % every == 0]
        records.append(Record((run["backbone"], run["method"], variant), run.get("metrics", {}),
                              {"test_accuracy": epochs}))
    columns = [Column(c.title, c.metric, c.digits, 1 if c.title == "epoch 1" else
                      (10 if c.title == "epoch 10" else None), c.paper) for c in CNN_COLUMNS]
    write_table(out, task, intro + CNN_NOTE + PAPER_NOTE, *as_md(paper_table(
        records, CNN_FIELDS, CNN_FIELDS, columns, paper, task)))


NLG_FIELDS = ("task", "method", "variant", "demographic")
NLG_LABELS = ("negative", "neutral", "positive", "other")
NLG_NOTE = (" Share of each demographic's samples per regard label; variant \"relaxed\" is the"
            " paper's R- models (general words from the identity view only).")


def nlg_table(runs: list[dict[str, Any]], paper: list[dict[str, str]], out: Path,
              intro: str) -> None:
    records: list[Record] = []
    for run in runs:
        if config_get(run, "task", "family") != "nlg" or not run.get("pretrained", True):
            continue
        variant = "relaxed" if config_get(run, "task", "relaxed") and run["method"] != "vanilla" \
            else ""
        metrics = run.get("metrics", {})
        demographics = sorted({k.split(".", 1)[1] for k in metrics if k.startswith(
            "negative_share.")})
        for demo in demographics:
            shares = {f"{label}_share": metrics.get(f"{label}_share.{demo}")
                      for label in NLG_LABELS}
            records.append(Record((run["task"], run["method"], variant, demo.replace("_", " ")),
                                  shares, {}))
    columns = [Column(label, f"{label}_share", 2, paper=True) for label in NLG_LABELS]
    write_table(out, "nlg", intro + NLG_NOTE + PAPER_NOTE, *as_md(paper_table(
        records, NLG_FIELDS, NLG_FIELDS, columns, paper, "nlg")))


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


def wandb_runs(path: str, api: Any = None) -> list[dict[str, Any]]:
    """The finished runs of W&B project ``ENTITY/PROJECT`` as results.json-like records: the
    run's config (the resolved Hydra config ``run.py`` logs), its summary's scalars as metrics
    (the runner logs every non-null metric there) and the logged ``test_accuracy`` history as
    the curve (W&B has only the evaluations logged during training, so a curve's step-0 point,
    kept only in results.json, is missing)."""
    if api is None:
        import wandb  # only for this source: a slow import

        api = wandb.Api()
    records = []
    for run in api.runs(path):
        config = dict(run.config)
        if getattr(run, "state", "finished") != "finished":
            continue
        try:
            keys = {k: str(config[k]["name"]) for k in ("task", "method", "backbone", "group")}
        except (KeyError, TypeError):
            continue                                   # not one of ours
        metrics = {k: float(v) for k, v in dict(run.summary).items()
                   if not k.startswith("_") and isinstance(v, int | float)
                   and not isinstance(v, bool)}
        curve = [{"step": int(row["_step"]), "value": float(row["test_accuracy"])}
                 for row in run.scan_history(keys=["_step", "test_accuracy"])
                 if row.get("test_accuracy") is not None]
        records.append({**keys, "status": "complete", "seed": config.get("seed"),
                        "pretrained": bool(config["backbone"].get("pretrained", True)),
                        "config": config, "metrics": metrics,
                        "curves": {"test_accuracy": curve} if curve else {},
                        "path": f"wandb:{path}/{run.id}"})
    return sorted(records, key=lambda r: r["path"])


def main(argv: list[str] | None = None, api: Any = None) -> int:
    """``api``: a ``wandb.Api()`` stand-in for ``--wandb`` (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("results/runs"))
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="read the runs from this W&B project instead of --runs")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    parser.add_argument("--paper", type=Path, default=PAPER_FILE,
                        help="the paper's numbers (CSV; default: the package's)")
    args = parser.parse_args(argv)
    if args.wandb is not None:
        runs = wandb_runs(args.wandb, api)
        source, flag = f"W&B {args.wandb}", f"--wandb {args.wandb}"
    elif not args.runs.is_dir():
        print(f"error: no runs directory {args.runs}", file=sys.stderr)
        return 2
    else:
        runs = load_runs(args.runs)
        source, flag = args.runs.as_posix(), f"--runs {args.runs.as_posix()}"
    if not runs:
        print(f"error: no complete runs in {source}", file=sys.stderr)
        return 2
    runs = [with_after_phase(r) for r in runs]
    frame = runs_frame(runs)
    families = {r["task"]: r["config"]["task"]["family"] for r in runs}
    args.out.mkdir(parents=True, exist_ok=True)
    intro = (f"Mean ± sample std over seeds, from `{source}` by "
             f"`python scripts/make_tables.py {flag} --out {args.out.as_posix()}`.")
    paper = load_paper(args.paper)
    paper_tables = {row["table"] for row in paper}
    clip_tables(runs, paper, args.out, intro)
    nlg_table(runs, paper, args.out, intro)
    for task in sorted(paper_tables - {"clip_zeroshot", "clip_finetune", "nlg"}):
        cnn_table(task, runs, paper, args.out, intro)
    for task in sorted(t for t, family in families.items()
                       if family not in ("dqn", "scan", "clip", "nlg") and t not in paper_tables):
        if families[task] not in COLUMNS:
            print(f"skipped {task}: no table layout for task family {families[task]!r}")
            continue
        columns, note = COLUMNS[families[task]], ""
        records = [r for r in runs if r["task"] == task]
        if any(APPROXIMATE_GROUP_COLUMNS[0][0] in r["metrics"] for r in records):
            columns, note = columns + APPROXIMATE_GROUP_COLUMNS, APPROXIMATE_GROUP_NOTE
        summary = summarize(frame[frame["task"] == task], [m for m, _, _ in columns])
        write_table(args.out, task, intro + note, *task_table(summary, columns))
    dqn_tasks = sorted(t for t, family in families.items() if family == "dqn")
    if dqn_tasks:
        columns = COLUMNS["dqn"]
        summary = summarize(frame[frame["task"].isin(dqn_tasks)], [m for m, _, _ in columns])
        write_table(args.out, "dqn", intro + DQN_NOTE, *dqn_table(summary, columns))
    scan_tasks = sorted(t for t, family in families.items() if family == "scan")
    if scan_tasks:
        columns = COLUMNS["scan"]
        splits = {r["task"]: str(config_get(r, "task", "split", default=r["task"]
                                            .removeprefix("scan_"))) for r in runs}
        scan = scan_frame(frame[frame["task"].isin(scan_tasks)], splits)
        summary = summarize(scan, [m for m, _, _ in columns])
        write_table(args.out, "scan", intro + SCAN_NOTE,
                    *scan_table(summary, columns, oracle_rows(scan, columns)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
