"""Collect ``results.json`` files into a table: mean ± std over seeds per configuration."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from equiv.results import RESULTS_FILE

METHOD_ORDER = ("vanilla", "equitune", "lambda_equitune", "equizero", "canonicalize")
KEYS = ("task", "backbone", "group", "method")


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every complete run under ``root`` (incomplete or unreadable files are ignored)."""
    runs = []
    for path in sorted(root.rglob(RESULTS_FILE)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("status") == "complete":
            runs.append({**data, "path": str(path)})
    return runs


def runs_frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: identity columns, seed, ``pretrained`` and every scalar metric."""
    rows = [{**{k: r[k] for k in (*KEYS, "seed", "pretrained")}, **r["metrics"]} for r in runs]
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per configuration: ``<metric>_mean``, ``_std`` (sample, ddof=1), ``_max`` and ``_n`` over
    seeds.

    Only pretrained runs count (random initialisation is a control, not a result).
    """
    frame = frame[frame["pretrained"].astype(bool)]
    present = [m for m in metrics if m in frame.columns]
    stats = frame.groupby(list(KEYS), sort=False)[present].agg(["mean", "std", "max", "count"])
    stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
    stats = stats.reset_index()
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    stats["_rank"] = stats["method"].map(lambda m: rank.get(m, len(rank)))
    stats = stats.sort_values(["task", "backbone", "group", "_rank", "method"])
    return stats.drop(columns="_rank").reset_index(drop=True)


def mean_std(mean: float, std: float, count: int, digits: int = 3) -> str:
    if pd.isna(mean) or count == 0:
        return "—"
    if count < 2 or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def config_get(run: dict[str, Any], *path: str, default: Any = None) -> Any:
    """``run["config"][path[0]][path[1]]...``, or ``default`` where the path is missing (runs
    written by older code, or by other task families, lack keys)."""
    node: Any = run.get("config", {})
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
