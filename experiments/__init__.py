"""One module per task family; each exposes ``run(cfg, ctx) -> Outcome`` and ``validate(cfg)``."""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {
    "image_classification": "experiments.image_classification",
    "scan": "experiments.scan",
    "dqn": "experiments.dqn",
    "clip": "experiments.clip",
    "nlg": "experiments.nlg",
}


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; valid: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family])
