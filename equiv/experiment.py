"""The contract between ``run.py`` and a task family's module in ``equiv/experiments/``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from equiv.loggers import RunLogger


@dataclass
class RunContext:
    """What a task needs from the runner: where to write, cache, log and compute."""

    run_dir: Path
    cache_dir: Path
    device: torch.device
    logger: RunLogger
    seed: int


@dataclass
class Outcome:
    """What a task returns: scalar metrics, curves (metric vs step) and anything else to record."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    summary: list[tuple[str, str]] = field(default_factory=list)   # (label, value) lines to print

    def add_point(self, curve: str, step: int, value: float) -> None:
        self.curves.setdefault(curve, []).append({"step": step, "value": value})


# The phases in which a method trains its own parameters with the backbone frozen, before
# finetuning; each has an "after phase" summary line and table column.
FROZEN_BACKBONE_PHASES = {"lambda_phase": "λ", "canonicalizer_phase": "canonicalizer"}


def phases_run(metrics: Mapping[str, Any], method: Any, key: str) -> list[tuple[str, str]]:
    """``(summary label, phase)`` for each frozen-backbone phase whose metric
    ``key.format(phase)`` the run recorded, e.g. ``("after the λ phase (200 steps, backbone
    frozen)", "lambda_phase")``."""
    return [(f"after the {name} phase ({method[phase].steps} steps, backbone frozen)", phase)
            for phase, name in FROZEN_BACKBONE_PHASES.items() if key.format(phase) in metrics]
