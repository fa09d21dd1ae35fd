"""Start states for the CartPole/Acrobot transfer setting: one side in pretraining, both in tests.

A DQN pretrained on :data:`PRESETS` ``*_right`` only ever starts on one side; the symmetric
evaluation (:func:`symmetric_regions`, ``make_start_env(..., symmetric=True)``) starts from that
region and from its mirror image equally often (:class:`StartRegion`). Both mirrors negate the
whole internal state (``[x, ẋ, θ, θ̇]``, ``[θ1, θ2, θ̇1, θ̇2]``), so the mirror of a box of
states is the box ``[−high, −low]``.

Why these regions: the dynamics mix orientations within an episode (a balanced pole leans both
ways, a swinging link crosses the vertical), so a start that is merely tilted barely matters —
probes (20 episodes) with CartPole's θ ∈ [0.05, 0.15] alone, Acrobot's θ1 ∈ [0.2, 0.5] or a fast
right swing gave pretrained DQNs that did about as well from the mirrored starts. A start that
calls for a *directional* skill does matter:

- ``cartpole_drifting_right``: the cart right of centre, x ∈ [1.0, 1.5], moving towards the right
  edge (termination at x = 2.4), ẋ ∈ [0.3, 0.8] m/s, pole leaning right, θ ∈ [0.05, 0.15]
  (θ > 0 leans right; termination at |θ| > 0.2095), θ̇ ∈ [−0.05, 0.05]. The policy must brake
  towards the left and recentre; pretrained only here, it never sees the cart left of centre
  heading left (the seed-0 pretrained DQN of ``dqn_cartpole``, 100 episodes a side: 500 on its
  own side, 98 ± 6 mirrored).
- ``acrobot_raised_right``: the first link released raised to the right, θ1 ∈ [1.0, 2.0] rad
  (θ1 > 0 to the right in gymnasium's rendering), θ2, θ̇1, θ̇2 ∈ [−0.1, 0.1] (Acrobot's own
  reset range); the swing-up is learnt from that side (``dqn_acrobot``'s pretrained DQN: −34 ± 1
  on its own side, −44 ± 1.5 mirrored).
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


_CARTPOLE_RIGHT = Region((1.0, 0.3, 0.05, -0.05), (1.5, 0.8, 0.15, 0.05))
_ACROBOT_RIGHT = Region((1.0, -0.1, -0.1, -0.1), (2.0, 0.1, 0.1, 0.1))

PRESETS: dict[str, StartPreset] = {
    "cartpole_drifting_right": StartPreset("CartPole-v1", _CARTPOLE_RIGHT),
    "cartpole_drifting_left": StartPreset("CartPole-v1", _CARTPOLE_RIGHT.mirrored()),
    "acrobot_raised_right": StartPreset("Acrobot-v1", _ACROBOT_RIGHT),
    "acrobot_raised_left": StartPreset("Acrobot-v1", _ACROBOT_RIGHT.mirrored()),
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

    With several regions, one is picked per episode (``info["start_region"]``): region
    ``seed mod k`` on a seeded reset, so that a run of consecutive evaluation seeds covers the
    sides equally (with a uniform pick, 20 fixed episodes put 15 on one side in a probe, and the
    "full distribution" return was mostly the seen side's), uniformly at random otherwise
    (training's autoresets). The state is drawn with the environment's ``np_random``, so
    ``reset(seed=...)`` makes the start reproducible.
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
        if len(self.regions) == 1:
            index = 0
        elif seed is not None:
            index = int(seed) % len(self.regions)
        else:
            index = int(rng.integers(len(self.regions)))
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
