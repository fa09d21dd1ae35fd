"""One module per task family; each exposes ``run(cfg, ctx) -> Outcome`` and ``validate(cfg)``."""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = {
    "image_classification": "equiv.experiments.image_classification",
    "scan": "equiv.experiments.scan",
    "dqn": "equiv.experiments.dqn",
    "clip": "equiv.experiments.clip",
    "nlg": "equiv.experiments.nlg",
}


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; valid: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[family])
