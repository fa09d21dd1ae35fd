"""The transfer setting: each environment's restricted pretraining distribution and the full,
symmetric one the wrapped Q-networks are evaluated and finetuned on.

- Gridworld: pretraining goals only in the top-left quadrant; evaluation goals anywhere (every
  rotation of a layout equally likely).
- CartPole / Acrobot: pretraining episodes start on the right only (the cart drifting towards the
  right edge with the pole leaning right; the first link raised to the right); evaluation starts
  on either side with probability 1/2 (``equiv.envs.start_states`` says why these regions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym

from equiv.envs import GridworldEnv, make_start_env

ENVIRONMENTS = ("gridworld", "cartpole", "acrobot")
START_PRESETS = {"cartpole": "cartpole_drifting_right", "acrobot": "acrobot_raised_right"}


def env_factory(name: str, kwargs: Mapping[str, Any], restricted: bool) -> Callable[[], gym.Env]:
    """A factory of fresh environments (vector envs call it once per copy)."""
    options = dict(kwargs)
    if name == "gridworld":
        region = "quadrant" if restricted else "any"
        return lambda: GridworldEnv(goal_region=region, **options)
    if name in START_PRESETS:
        preset = START_PRESETS[name]
        return lambda: make_start_env(preset, symmetric=not restricted, **options)
    raise ValueError(f"unknown environment {name!r}; valid: {', '.join(ENVIRONMENTS)}")
