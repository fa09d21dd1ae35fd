"""Start states for the CartPole/Acrobot transfer setting: one side in pretraining, both in tests.

A DQN pretrained from :data:`PRESETS` ``*_right`` starts only ever sees the pole (or the first
link) on one side; the symmetric evaluation (:func:`symmetric_regions`, ``make_start_env(...,
symmetric=True)``) draws from that region and its mirror image with equal probability. Both
mirrors negate the whole internal state (``[x, ẋ, θ, θ̇]``, ``[θ1, θ2, θ̇1, θ̇2]``), so the
mirror of a box of states is the box ``[−high, −low]``.

Ranges (radians, and the envs' own units elsewhere):

- ``cartpole_tilted_right``: θ ∈ [0.05, 0.15] (θ > 0 leans right), x, ẋ, θ̇ ∈ [−0.05, 0.05]
  (CartPole's own reset range); the episode ends at |θ| > 0.2095, so it starts well before that.
- ``acrobot_swung_right``: θ1 ∈ [0.2, 0.5] (θ1 > 0 swings the first link to the right in
  gymnasium's rendering), θ2, θ̇1, θ̇2 ∈ [−0.1, 0.1] (Acrobot's own reset range).
- ``*_left``: their mirror images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class Region:
    """An axis-aligned box ``[low, high]`` of internal states."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or any(
                lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"invalid region {self}")

    def mirrored(self) -> Region:
        """The image of the box under ``s ↦ −s``."""
        return Region(tuple(-h for h in self.high), tuple(-lo for lo in self.low))

    def contains(self, state: Any) -> bool:
        s = np.asarray(state, dtype=np.float64)
        return bool(np.all(s >= np.asarray(self.low)) and np.all(s <= np.asarray(self.high)))


@dataclass(frozen=True)
class StartPreset:
    env_id: str
    region: Region


_CARTPOLE_RIGHT = Region((-0.05, -0.05, 0.05, -0.05), (0.05, 0.05, 0.15, 0.05))
_ACROBOT_RIGHT = Region((0.2, -0.1, -0.1, -0.1), (0.5, 0.1, 0.1, 0.1))

PRESETS: dict[str, StartPreset] = {
    "cartpole_tilted_right": StartPreset("CartPole-v1", _CARTPOLE_RIGHT),
    "cartpole_tilted_left": StartPreset("CartPole-v1", _CARTPOLE_RIGHT.mirrored()),
    "acrobot_swung_right": StartPreset("Acrobot-v1", _ACROBOT_RIGHT),
    "acrobot_swung_left": StartPreset("Acrobot-v1", _ACROBOT_RIGHT.mirrored()),
}


def _preset(name: str) -> StartPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown start preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def symmetric_regions(name: str) -> tuple[Region, Region]:
    """The evaluation distribution of preset ``name``: its region and its mirror image."""
    region = _preset(name).region
    return region, region.mirrored()


def _observe(env: gym.Env) -> np.ndarray:
    """The observation of ``env.unwrapped.state``: Acrobot's ``_get_ob()``, else (CartPole) the
    state itself as float32."""
    base = env.unwrapped
    if hasattr(base, "_get_ob"):
        return base._get_ob()
    return np.asarray(base.state, dtype=np.float32)


class StartRegion(gym.Wrapper):
    """After each ``reset``, replaces the start state by one drawn uniformly from a box.

    With several regions, one is picked uniformly per episode (``info["start_region"]``). Draws
    use the environment's ``np_random``, so ``reset(seed=...)`` makes the start reproducible.
    """

    def __init__(self, env: gym.Env, regions: Region | Sequence[Region]) -> None:
        super().__init__(env)
        self.regions = (regions,) if isinstance(regions, Region) else tuple(regions)
        if not self.regions:
            raise ValueError("at least one region is required")

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        base = self.env.unwrapped
        rng = base.np_random
        index = int(rng.integers(len(self.regions))) if len(self.regions) > 1 else 0
        region = self.regions[index]
        if np.shape(base.state) != (len(region.low),):
            raise ValueError(f"region has {len(region.low)} coordinates, the state has shape "
                             f"{np.shape(base.state)}")
        base.state = rng.uniform(np.asarray(region.low), np.asarray(region.high))
        return _observe(self.env), {**info, "start_region": index}


def make_start_env(name: str, symmetric: bool = False, **make_kwargs: Any) -> StartRegion:
    """``gym.make`` the preset's environment, starting in its region (or, with ``symmetric``,
    in the region or its mirror image, each with probability 1/2)."""
    preset = _preset(name)
    regions = symmetric_regions(name) if symmetric else (preset.region,)
    return StartRegion(gym.make(preset.env_id, **make_kwargs), regions)
