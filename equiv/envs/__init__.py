"""Environments for the deep Q-learning transfer experiments, and their symmetries.

Importing this package registers ``equiv/Gridworld-v0`` with gymnasium (once). The symmetry
group actions (:mod:`equiv.envs.symmetries`) need torch, so they are imported on first use: the
environments themselves stay usable without the slow torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium

from equiv.envs.gridworld import GridworldEnv, Layout
from equiv.envs.start_states import (
    PRESETS,
    Region,
    StartRegion,
    make_start_env,
    symmetric_regions,
)

GRIDWORLD_ID = "equiv/Gridworld-v0"

_SYMMETRY_NAMES = (
    "ENV_SYMMETRIES",
    "EnvSymmetry",
    "SignFlip",
    "make_env_action",
    "transform_action",
    "transform_state",
)

__all__ = [
    "GRIDWORLD_ID",
    "PRESETS",
    "GridworldEnv",
    "Layout",
    "Region",
    "StartRegion",
    "make_start_env",
    "symmetric_regions",
    *_SYMMETRY_NAMES,
]


def register() -> None:
    """Register the Gridworld with gymnasium; a no-op when it is registered already."""
    if GRIDWORLD_ID not in gymnasium.registry:
        gymnasium.register(id=GRIDWORLD_ID, entry_point="equiv.envs.gridworld:GridworldEnv")


register()


def __getattr__(name: str) -> Any:
    if name in _SYMMETRY_NAMES:
        return getattr(importlib.import_module("equiv.envs.symmetries"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
