"""Draw the paper's figures from a directory of runs, one PNG and one PDF per figure.

    python scripts/make_plots.py --runs results/runs --out results/figures

Mean ± sample std over seeds; runs with ``pretrained=false`` are excluded. Output is
deterministic: rerunning on the same runs gives byte-identical files. Torch is never imported,
so the script starts in seconds on a machine busy with training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style

matplotlib.use("Agg")  # headless and pixel-deterministic, whatever the user's default backend

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from equiv.aggregate import config_get, load_runs
from equiv.paper_numbers import load_paper

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


def one_config_per_seed(runs: list[Run]) -> list[Run]:
    """The pretrained runs, refused if a (backbone, method) holds one seed twice: averaging
    them would mix configurations under one legend entry."""
    runs = [r for r in runs if is_pretrained(r)]
    duplicates = duplicate_seeds(runs, ("backbone", "method"))
    if duplicates:
        raise SkipFigure(f"several runs for one seed ({', '.join(duplicates)}); "
                         "point --runs at one configuration per backbone and method")
    return runs


def draw_curve(ax: Any, s: pd.DataFrame, label: str, color: str, linestyle: str = "-") -> None:
    """One mean curve with its seed count in the legend and a ± std band from 2 seeds on."""
    n = int(s["n"].max())
    ax.plot(s["step"], s["mean"], linestyle=linestyle, color=color, linewidth=1.8, marker="o",
            markersize=3, label=f"{label} ({n} seed{'s' if n != 1 else ''})")
    if n >= 2:
        ax.fill_between(s["step"], s["mean"] - s["std"], s["mean"] + s["std"], color=color,
                        alpha=0.15, linewidth=0)


def finish(fig: Figure, ax: Any, title: str, xlabel: str, ylabel: str) -> Figure:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


SCAN_CURVE_METHODS = {"equizero": "-", "equitune": ":", "canonicalize": "-."}
SCAN_VERB4_METHODS = {"equizero": "-", "lambda_equitune": "--", "canonicalize": "-."}
SCAN_TITLES = {"scan_add_jump": "Equizero vs. equitune vs. canonicalize, few-shot (SCAN Add Jump)",
               "scan_add_jump_verb4": "SCAN Add Jump, four verbs cycled: equizero vs. "
                                      "λ-equitune vs. canonicalize"}


def scan_finetune_curve(runs: list[Run],
                        methods: dict[str, str] = SCAN_CURVE_METHODS) -> Figure:
    """Test accuracy vs finetuning examples: does a zero-shot lead survive finetuning?
    (λ-equitune's and canonicalize's curves start after their phases.)"""
    runs = one_config_per_seed([r for r in runs if r["method"] in methods])
    stats = curve_stats(runs, "test_acc", tuple(methods))
    if stats.empty:
        raise SkipFigure(f"no {' or '.join(methods)} runs with a test_acc curve")
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
            if not s.empty:
                draw_curve(ax, s, f"{label} {method}", colors[label], linestyle)
    steps = sorted(stats["step"].unique().tolist())
    if len(steps) <= 12:  # tick the evaluation points themselves (0, 400, ...) when few
        ax.set_xticks(steps)
    task = runs[0]["task"]
    return finish(fig, ax, SCAN_TITLES.get(task, task),
                  "finetuning examples seen (the paper's batch-1 iterations)",
                  "test exact-match accuracy")


IMAGE_METHODS = {"vanilla": ("tab:gray", "--"), "equitune": ("tab:orange", ":"),
                 "lambda_equitune": ("tab:blue", "-"), "equizero": ("tab:green", "-."),
                 "canonicalize": ("tab:purple", "-")}
IMAGE_TITLES = {"digits_rot90": "Rotated digits (small CNN, C4)",
                "fmnist_rot90": "Rotated Fashion-MNIST (ResNet-18-shaped small CNN, C4)",
                "fmnist_rot45": "Fashion-MNIST in 45° turns (ResNet-18-shaped small CNN, C8)"}


def main_group(runs: list[Run]) -> list[Run]:
    """The runs over the group most of them use: a task's subgroup runs (e.g. fmnist_rot45 with
    ``group=rot90``) are rows of its table, not extra lines of its figure."""
    counts = Counter(r["group"] for r in runs)
    top = max(sorted(counts), key=counts.__getitem__) if counts else None
    return [r for r in runs if r["group"] == top]


def image_finetune_curve(runs: list[Run]) -> Figure:
    """Test accuracy on rotated images vs finetuning steps, one line per method (± std), over
    the task's main group."""
    runs = one_config_per_seed(main_group(runs))
    stats = curve_stats(runs, "test_accuracy", tuple(IMAGE_METHODS))
    if stats.empty:
        raise SkipFigure("no runs with a test_accuracy curve")
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for method, (color, linestyle) in IMAGE_METHODS.items():
        s = stats[stats["method"] == method]
        if not s.empty:
            draw_curve(ax, s, method, color, linestyle)
    task = runs[0]["task"]
    return finish(fig, ax, IMAGE_TITLES.get(task, task),
                  "training steps (λ-equitune, canonicalize: their λ or canonicalizer phase first)",
                  "test accuracy (each image randomly rotated)")


# Fig. 3 of the paper: regard label shares per model variant and demographic, stacked bottom to
# top as in the paper (other, positive, neutral, negative), each with the paper's fill.
NLG_TASKS = tuple(f"nlg_{axis}_{context}" for axis in ("race", "gender", "sexuality")
                  for context in ("respect", "occupation"))
NLG_VARIANTS = ("GPT2", "EquiGPT2", "R-EquiGPT2", "LambdaEquiGPT2", "R-LambdaEquiGPT2",
                "EquizeroGPT2", "R-EquizeroGPT2")
NLG_SEGMENTS = (  # label, face colour, hatch
    ("other", "white", ".."), ("positive", "black", ""), ("neutral", "white", "///"),
    ("negative", "0.6", ""))


def regard_shares(runs: list[Run]) -> tuple[dict[str, dict[str, dict[str, float]]],
                                             dict[str, int]]:
    """Mean label share per model variant and demographic over seeds, and the seed count per
    variant. Runs of one variant must cover the same demographics."""
    sums: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, int] = {}
    for run in runs:
        variant, dists = run.get("model_variant"), run.get("distributions")
        if not variant or not isinstance(dists, dict) or not dists:
            continue
        acc = sums.setdefault(variant, {d: {} for d in dists})
        if set(acc) != set(dists):
            raise SkipFigure(f"{variant} runs cover different demographics "
                             f"({sorted(acc)} vs {sorted(dists)})")
        for demo, dist in dists.items():
            for label, _, _ in NLG_SEGMENTS:
                acc[demo][label] = acc[demo].get(label, 0.0) + float(dist.get(label, 0.0))
        counts[variant] = counts.get(variant, 0) + 1
    means = {v: {d: {k: s / counts[v] for k, s in dist.items()} for d, dist in per.items()}
             for v, per in sums.items()}
    return means, counts


def nlg_regard_bars(runs: list[Run]) -> Figure:
    """Stacked regard shares per variant × demographic: equal bars within a variant mean a fair
    model (Equi*/Equizero* by construction), a larger black segment a more favourable one."""
    runs = [r for r in runs if is_pretrained(r)]
    scorers = sorted({str(r.get("scorer", "regard")) for r in runs})
    if len(scorers) > 1:
        raise SkipFigure(f"runs scored by different scorers ({', '.join(scorers)}); "
                         "point --runs at one scorer")
    duplicates = duplicate_seeds([{**r, "model_variant": r.get("model_variant")} for r in runs],
                                 ("model_variant",))
    if duplicates:
        raise SkipFigure(f"several runs for one seed ({', '.join(duplicates)}); "
                         "point --runs at one configuration per model variant")
    shares, counts = regard_shares(runs)
    if not shares:
        raise SkipFigure("no runs with label distributions")
    known = {v: i for i, v in enumerate(NLG_VARIANTS)}
    variants = sorted(shares, key=lambda v: (known.get(v, len(known)), v))
    demos = list(shares[variants[0]])
    width, gap = 0.8, 0.8
    fig = Figure(figsize=(1.0 + 0.55 * len(variants) * len(demos) + 0.4 * len(variants), 4.4))
    ax = fig.add_subplot()
    ticks, tick_labels = [], []
    for i, variant in enumerate(variants):
        start = i * (len(demos) + gap)
        for j, demo in enumerate(shares[variant]):
            x, bottom = start + j, 0.0
            for label, color, hatch in NLG_SEGMENTS:
                value = shares[variant][demo].get(label, 0.0)
                ax.bar(x, value, width, bottom=bottom, color=color, hatch=hatch,
                       edgecolor="black", linewidth=0.8,
                       label=label if (i, j) == (0, 0) else None)
                bottom += value
            ticks.append(x)
            tick_labels.append(demo.split(" ")[0])
        center = start + (len(shares[variant]) - 1) / 2
        n = counts[variant]
        ax.annotate(f"{variant}\n({n} seed{'s' if n != 1 else ''})", (center, 0),
                    xycoords=("data", "axes fraction"), xytext=(0, -30),
                    textcoords="offset points", ha="center", va="top", fontsize="small")
    ax.set_xticks(ticks, tick_labels, fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Regard Classifier Scores" if scorers == ["regard"] else
                  f"label shares ({scorers[0]})")
    axis, context = str(runs[0]["task"]).split("_")[1:3]
    ax.set_title(f"{axis.capitalize()}-{context}")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize="small", loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


# DQN transfer: one figure per environment, greedy return vs finetuning env steps per method.
DQN_ENVS = ("gridworld", "cartpole", "acrobot")
DQN_METHODS = {"vanilla": "tab:gray", "equitune": "tab:blue", "lambda_equitune": "tab:green",
               "equizero": "tab:red", "canonicalize": "tab:purple"}
DQN_TITLES = {"dqn_gridworld": "Gridworld 5×5 (pretrained: goals in the top-left 3×3 only)",
              "dqn_cartpole": "CartPole (pretrained: cart drifting right only)",
              "dqn_acrobot": "Acrobot (pretrained: first link raised right only)"}


def snapped(run: Run, curve: str) -> Run:
    """``run`` with ``curve``'s steps rounded to its evaluation interval. Vectorised envs advance
    several steps at a time, so an evaluation "every 4,000 steps" lands at 4,001 in one seed and
    4,003 in another; aligned, the seeds average at each evaluation instead of being dropped."""
    finetune = run.get("config", {}).get("task", {}).get("finetune", {}) or {}
    every = finetune.get("eval_every") or (finetune.get("dqn") or {}).get("eval_every")
    if not every or curve not in run.get("curves", {}):
        return run
    points = [{**p, "step": round(p["step"] / every) * every} for p in run["curves"][curve]]
    return {**run, "curves": {**run["curves"], curve: points}}


def dqn_curve(runs: list[Run]) -> Figure:
    """Mean greedy return vs finetuning env steps, one line per method (step 0: zero-shot), and
    the pretrained DQN's return in its own restricted setting for reference."""
    runs = one_config_per_seed(runs)
    stats = curve_stats([snapped(r, "return") for r in runs], "return")
    if stats.empty:
        raise SkipFigure("no runs with a return curve")
    backbones = sorted(stats["backbone"].unique().tolist())
    if len(backbones) > 1:
        raise SkipFigure(f"runs of several backbones ({', '.join(backbones)}); "
                         "point --runs at one backbone per task")
    task = runs[0]["task"]
    methods = [m for m in DQN_METHODS if m in set(stats["method"])]
    methods += sorted(set(stats["method"]) - set(methods))

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        draw_curve(ax, stats[stats["method"] == method], method,
                   DQN_METHODS.get(method, SPARE_COLORS[i % len(SPARE_COLORS)]))
    pretrained = sorted({r["metrics"]["pretrained_return"] for r in runs
                         if "pretrained_return" in r.get("metrics", {})})
    if len(pretrained) == 1:   # one cached pretraining shared by every run
        ax.axhline(pretrained[0], color="black", linestyle="--", linewidth=1,
                   label="pretrained DQN in its own (restricted) setting")
    elif pretrained:           # one pretraining per seed: their mean
        seeds = {r["seed"]: r["metrics"]["pretrained_return"] for r in runs
                 if "pretrained_return" in r.get("metrics", {})}
        ax.axhline(statistics.fmean(seeds.values()), color="black", linestyle="--",
                   linewidth=1, label=f"pretrained DQN in its own (restricted) setting, "
                                      f"mean of {len(seeds)} seeds")
    return finish(fig, ax, DQN_TITLES.get(task, task),
                  "finetuning env steps on the full distribution (0 = zero-shot)",
                  "mean greedy return (fixed evaluation episodes)")


# Figs. 4/7/8 of the paper: CLIP zero-shot top-1 per backbone, one bar per method, the paper's
# value for each bar as a black tick. One figure per dataset × transformation task.
CLIP_DATASETS = {"cifar100": "CIFAR-100", "imagenet_v2": "ImageNet-V2"}
CLIP_TASKS = {"clip_rot90": "random 90° rotations", "clip_flip": "random flips"}
CLIP_BACKBONES = {"clip_rn50": "RN50", "clip_rn101": "RN101", "clip_vitb32": "ViT-B/32",
                  "clip_vitb16": "ViT-B/16"}
# bar key, legend label, metric, colour: "upright" is the backbone alone on untransformed images.
CLIP_BARS = (("upright", "no transformation", "upright_accuracy", "0.85"),
             ("vanilla", "pretrained model", "zeroshot_accuracy", "tab:gray"),
             ("equitune", "equitune", "zeroshot_accuracy", "tab:blue"),
             ("equizero", "equizero", "zeroshot_accuracy", "tab:red"),
             ("canonicalize", "canonicalize (prior phase)", "zeroshot_accuracy", "tab:purple"))
OPTIONAL_BARS = {"canonicalize"}        # not in the paper: a bar only where it has runs

PAPER_MARKER = {"linestyle": "none", "marker": "_", "markersize": 14, "markeredgewidth": 2.2,
                "color": "black", "gid": "paper"}


def seeds_label(counts: Iterable[int]) -> str:
    counts = sorted(set(counts))
    if not counts:
        return "not run"
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{span} seed{'s' if counts[-1] != 1 else ''}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; NaN for one value) of ``values``."""
    stats = pd.Series(values, dtype=float).agg(["mean", "std"])
    return float(stats["mean"]), float(stats["std"])


def paper_value(paper: list[dict[str, str]], table: str, metric: str,
                keys: dict[str, str]) -> float | None:
    """The paper's number as a fraction (a paper field "*" matches anything), or None."""
    for row in paper:
        if row["table"] == table and row["metric"] == metric and all(
                row[k] in ("*", v) for k, v in keys.items()):
            return float(row["text"].lstrip("≈"))
    return None


def clip_bar_values(runs: list[Run], dataset: str) -> dict[tuple[str, str], list[float]]:
    """Our values per (backbone, bar), one per seed, from the zero-shot runs on ``dataset``.
    Upright accuracy is the backbone's alone: one value per seed, whichever method ran it."""
    runs = [r for r in runs if config_get(r, "task", "dataset") == dataset
            and not (config_get(r, "task", "finetune", "steps", default=0) or 0)
            and r["method"] in {key for key, *_ in CLIP_BARS}]
    runs = one_config_per_seed(runs)
    values: dict[tuple[str, str], list[float]] = {}
    upright: dict[tuple[str, int], float] = {}
    for run in sorted(runs, key=lambda r: (r["backbone"], r["method"], r["seed"])):
        metrics = run.get("metrics", {})
        if metrics.get("zeroshot_accuracy") is not None:
            values.setdefault((run["backbone"], run["method"]), []).append(
                float(metrics["zeroshot_accuracy"]))
        if metrics.get("upright_accuracy") is not None:
            upright.setdefault((run["backbone"], run["seed"]), float(metrics["upright_accuracy"]))
    for (backbone, _), value in sorted(upright.items()):
        values.setdefault((backbone, "upright"), []).append(value)
    return values


def clip_zeroshot_bars(runs: list[Run], dataset: str, paper: list[dict[str, str]]) -> Figure:
    """Grouped bars: our mean ± std (percent) per backbone and method, the paper's as ticks."""
    values = clip_bar_values(runs, dataset)
    task = runs[0]["task"]
    if not values:
        raise SkipFigure(f"no zero-shot runs on {dataset}")
    backbones = list(CLIP_BACKBONES) + sorted({b for b, _ in values} - set(CLIP_BACKBONES))
    bars = [bar for bar in CLIP_BARS
            if bar[0] not in OPTIONAL_BARS or any(key == bar[0] for _, key in values)]
    width = 0.8 / len(bars)
    fig = Figure(figsize=(7.2, 4.4))
    ax = fig.add_subplot()
    handles: list[Any] = []
    for j, (key, label, metric, color) in enumerate(bars):
        counts = [len(values[b, key]) for b in backbones if (b, key) in values]
        handles.append(Patch(facecolor=color, edgecolor="black", linewidth=0.6,
                             label=f"{label} ({seeds_label(counts)})"))
        for i, backbone in enumerate(backbones):
            x = i + (j - (len(bars) - 1) / 2) * width
            mine = values.get((backbone, key), [])
            if mine:
                mean, std = mean_std([100 * v for v in mine])
                ax.bar(x, mean, width, color=color, edgecolor="black", linewidth=0.6,
                       yerr=std if len(mine) >= 2 else None, capsize=2,
                       error_kw={"linewidth": 0.8})
            ref = paper_value(paper, "clip_zeroshot", metric, {
                "task": task, "dataset": dataset, "backbone": backbone,
                "method": "vanilla" if key == "upright" else key})
            if ref is not None:
                ax.plot([x], [100 * ref], **PAPER_MARKER)
            if not mine:
                ax.annotate("not run", (x, 0), xytext=(0, 3), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize="x-small",
                            color="0.4")
    ax.set_xticks(range(len(backbones)), [CLIP_BACKBONES.get(b, b) for b in backbones])
    ax.set_ylim(bottom=0)
    ax.set_title(f"CLIP zero-shot on {CLIP_DATASETS.get(dataset, dataset)} under "
                 f"{CLIP_TASKS.get(task, task)}")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    handles.append(Line2D([], [], **PAPER_MARKER, label="paper"))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def clip_zeroshot_figure(dataset: str) -> Callable[[list[Run]], Figure]:
    def draw(runs: list[Run]) -> Figure:
        return clip_zeroshot_bars(runs, dataset, load_paper())
    return draw


CLIP_FINETUNE_METHODS = {"equitune": "tab:blue", "lambda_equitune": "tab:green",
                         "equizero": "tab:red", "canonicalize": "tab:purple"}


def clip_finetune_curves(runs: list[Run]) -> Figure:
    """Paper Figs. 5/11: test top-1 on rot90-CIFAR-100 along finetuning, one panel per
    backbone, our mean ± std per method and the paper's points (dotted, open markers)."""
    runs = one_config_per_seed([
        r for r in runs if config_get(r, "task", "dataset") == "cifar100"
        and (config_get(r, "task", "finetune", "steps", default=0) or 0) > 0])
    stats = curve_stats(runs, "test_accuracy", tuple(CLIP_FINETUNE_METHODS))
    if stats.empty:
        raise SkipFigure("no finetuning runs on cifar100 with a test_accuracy curve")
    paper = load_paper()
    fig = Figure(figsize=(9.6, 7.2))
    axes = fig.subplots(2, 2).ravel()
    for ax, backbone in zip(axes, CLIP_BACKBONES, strict=True):
        for method, color in CLIP_FINETUNE_METHODS.items():
            s = stats[(stats["backbone"] == backbone) & (stats["method"] == method)]
            if not s.empty:
                draw_curve(ax, s.assign(mean=100 * s["mean"], std=100 * s["std"]), method,
                           color)
            points = [(int(row["step"]), 100 * float(row["text"].lstrip("≈"))) for row in paper
                      if row["table"] == "clip_finetune" and row["backbone"] == backbone
                      and row["method"] == method]
            if points:
                steps, values = zip(*sorted(points), strict=True)
                ax.plot(steps, values, linestyle=":", color=color, marker="o",
                        markerfacecolor="white", markersize=4, label=f"{method} (paper)")
        ax.set_title(CLIP_BACKBONES[backbone])
        ax.set_xlabel("finetuning steps")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle("CLIP finetuning on rot90-CIFAR-100 (step 0: after λ-equitune's λ phase, "
                 "canonicalize's canonicalizer phase)")
    fig.tight_layout()
    return fig


# λ-equitune's weights over the |G| views at the end of a run (``lambda_weights`` in
# results.json), indexed relative to the upright view: the paper's illustration of λ putting its
# weight on the view that undoes the test-time rotation.
LAMBDA_TASKS = ("digits_rot90", "fmnist_rot90", "fmnist_rot45", "cnn_cifar10_rot90")
VIEW_LABELS = {"rot90": ("upright", "+90°", "+180°", "+270°")}


def lambda_weights_figure(runs: list[Run]) -> Figure:
    """Left: mean λ weight per view relative to the upright one (± std over seeds), with the
    uniform 1/|G| for reference. Right: share of test images by the weight on their upright
    view, the seeds' images pooled."""
    runs = one_config_per_seed([r for r in runs if isinstance(r.get("lambda_weights"), dict)])
    if not runs:
        raise SkipFigure("no runs with lambda_weights")
    orders = {len(r["lambda_weights"]["relative_mean"]) for r in runs}
    edges = {tuple(r["lambda_weights"]["upright_histogram"]["edges"]) for r in runs}
    if len(orders) > 1 or len(edges) > 1:
        raise SkipFigure("runs with different group orders or histogram bins")
    (order,), (edge,) = orders, edges
    backbones = sorted({r["backbone"] for r in runs})
    colors = {b: SPARE_COLORS[i % len(SPARE_COLORS)] if len(backbones) > 1 else "tab:blue"
              for i, b in enumerate(backbones)}
    transform = str(config_get(runs[0], "task", "transform", default=""))
    labels = VIEW_LABELS.get(transform, ("upright", *(f"view {r}" for r in range(1, order))))
    fig = Figure(figsize=(9.6, 4.0))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    width = 0.8 / len(backbones)
    centers = [(edge[i] + edge[i + 1]) / 2 for i in range(len(edge) - 1)]
    bin_width = (edge[1] - edge[0]) * 0.8 / len(backbones)
    for k, backbone in enumerate(backbones):
        mine = [r["lambda_weights"] for r in runs if r["backbone"] == backbone]
        n = len(mine)
        label = f"{backbone} ({n} seed{'s' if n != 1 else ''})"
        offset = (k - (len(backbones) - 1) / 2)
        stats = [mean_std([w["relative_mean"][r] for w in mine]) for r in range(order)]
        left.bar([r + offset * width for r in range(order)], [m for m, _ in stats], width,
                 yerr=[s for _, s in stats] if n >= 2 else None, capsize=3,
                 color=colors[backbone], edgecolor="black", linewidth=0.6, label=label)
        counts = [sum(w["upright_histogram"]["counts"][i] for w in mine)
                  for i in range(len(centers))]
        right.bar([c + offset * bin_width for c in centers],
                  [c / max(1, sum(counts)) for c in counts], bin_width,
                  color=colors[backbone], edgecolor="black", linewidth=0.6, label=label)
    left.axhline(1 / order, color="black", linestyle="--", linewidth=1,
                 label=f"uniform (1/{order})")
    left.set_xticks(range(order), labels[:order])
    left.set_ylim(0, 1)
    right.set_xlim(edge[0], edge[-1])
    right.set_ylim(bottom=0)
    task = runs[0]["task"]
    fig.suptitle(f"λ-equitune weights on the test set, {IMAGE_TITLES.get(task, task)}")
    finish(fig, left, "mean λ per view (relative to the upright view)",
           "view, relative to the one that undoes the test rotation", "mean normalised λ")
    return finish(fig, right, "weight on the upright view", "λ on the upright view",
                  "share of test images (seeds pooled)")


FIGURES = (
    FigureSpec("scan_finetune_curve", "scan_add_jump", scan_finetune_curve),
    FigureSpec("scan_verb4_finetune_curve", "scan_add_jump_verb4",
               partial(scan_finetune_curve, methods=SCAN_VERB4_METHODS)),
    *(FigureSpec(f"{task}_finetune_curve", task, image_finetune_curve) for task in IMAGE_TITLES),
    *(FigureSpec(f"dqn_{env}", f"dqn_{env}", dqn_curve) for env in DQN_ENVS),
    *(FigureSpec(f"{task}_regard", task, nlg_regard_bars) for task in NLG_TASKS),
    *(FigureSpec(f"clip_zeroshot_{dataset}_{task}", task, clip_zeroshot_figure(dataset))
      for dataset in CLIP_DATASETS for task in CLIP_TASKS),
    FigureSpec("clip_finetune_rot90_cifar100", "clip_rot90", clip_finetune_curves),
    *(FigureSpec(f"{task}_lambda_weights", task, lambda_weights_figure) for task in LAMBDA_TASKS),
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
