"""Symmetries of the environments, as group actions on observations (in) and Q-values (out).

A Q-network is equivariant when ``Q(g·s)[g·a] = Q(s)[a]``, i.e. ``Q(g·s) = g·Q(s)`` with ``g``
acting on the action axis by :class:`~equiv.groups.permutation.LastDimPermutation`. Each symmetry
also acts on the environment's *internal* state and on single actions
(:func:`transform_state`, :func:`transform_action`), so the tests can check that the dynamics
really commute with it: ``step(g·s, g·a) = g·step(s, a)``.

- ``grid_rot90`` (order 4): element ``g`` turns the Gridworld ``g`` quarter turns
  counter-clockwise, like ``torch.rot90(x, g, dims=(-2, -1))`` and the ``rot90`` image group.
  "Up" becomes "left", so with the clockwise action order ``g·a = (a − g) mod 4``.
- ``cartpole_reflect`` (order 2): the left-right mirror negates ``[x, ẋ, θ, θ̇]`` and swaps
  push-left (0) with push-right (1).
- ``acrobot_reflect`` (order 2): the mirror negates both angles and velocities, i.e. the
  observation entries ``sin θ1, sin θ2, θ̇1, θ̇2``, and swaps torque −1 (0) with +1 (2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equiv.envs.gridworld import Layout
from equiv.groups.base import GroupAction, Representation
from equiv.groups.images import ROT90, PixelPermutation
from equiv.groups.permutation import LastDimPermutation, cyclic_table, power_table


class SignFlip(Representation):
    """Negates the chosen last-dimension coordinates of ``x[b]`` when ``g[b]`` is odd.

    The mirror symmetries of the control tasks are of this kind (order 2, or any cyclic group in
    which odd elements mirror). Acts on ``[B, D]`` and more generally on ``[B, ..., D]``.
    """

    def __init__(self, negate: Sequence[int], dim: int) -> None:
        mask = torch.zeros(dim, dtype=torch.bool)
        mask[list(negate)] = True
        self.mask = mask

    def apply(self, x: Tensor, g: Tensor) -> Tensor:
        if x.shape[-1] != self.mask.shape[0]:
            raise ValueError(f"expected last dimension {self.mask.shape[0]}, got {tuple(x.shape)}")
        odd = (g.to(x.device) % 2 == 1).view(g.shape[0], *([1] * (x.dim() - 1)))
        flip = odd & self.mask.to(x.device)
        return torch.where(flip, -x, x)


@dataclass(frozen=True)
class EnvSymmetry:
    """One symmetry of one environment: its group and how it acts on everything.

    ``action_perm`` is ``σ``, the action permutation of the generator (``g·a = σ^g(a)``);
    ``state`` maps ``(internal state, g)`` to the transformed internal state.
    """

    env_id: str
    order: int
    action_perm: tuple[int, ...]
    rep_in: Callable[[], Representation]
    state: Callable[[Any, int], Any]


def _rotate_layout(layout: Layout, g: int) -> Layout:
    return layout.rotated(g)


def _negate(negate: Sequence[int]) -> Callable[[Any, int], np.ndarray]:
    def transform(state: Any, g: int) -> np.ndarray:
        out = np.array(state, dtype=np.float64)
        if g % 2:
            out[list(negate)] *= -1.0
        return out
    return transform


ENV_SYMMETRIES: dict[str, EnvSymmetry] = {
    "grid_rot90": EnvSymmetry(
        env_id="equiv/Gridworld-v0", order=4, action_perm=(3, 0, 1, 2),
        rep_in=lambda: PixelPermutation(ROT90), state=_rotate_layout),
    "cartpole_reflect": EnvSymmetry(
        env_id="CartPole-v1", order=2, action_perm=(1, 0),
        rep_in=lambda: SignFlip([0, 1, 2, 3], dim=4), state=_negate([0, 1, 2, 3])),
    "acrobot_reflect": EnvSymmetry(
        env_id="Acrobot-v1", order=2, action_perm=(2, 1, 0),
        rep_in=lambda: SignFlip([1, 3, 4, 5], dim=6), state=_negate([0, 1, 2, 3])),
}


def _symmetry(name: str) -> EnvSymmetry:
    if name not in ENV_SYMMETRIES:
        raise ValueError(f"unknown environment symmetry {name!r}; valid: "
                         f"{', '.join(sorted(ENV_SYMMETRIES))}")
    return ENV_SYMMETRIES[name]


def _element(sym: EnvSymmetry, g: int) -> int:
    if not 0 <= int(g) < sym.order:
        raise ValueError(f"group element {g} outside 0..{sym.order - 1}")
    return int(g)


def make_env_action(name: str) -> GroupAction:
    """The group action of symmetry ``name`` on observations ``[B, ...]`` and Q-values
    ``[B, n_actions]``."""
    sym = _symmetry(name)
    rep_out = LastDimPermutation(power_table(sym.action_perm, sym.order))
    return GroupAction(name, cyclic_table(sym.order), sym.rep_in(), rep_out)


def grid_rot90() -> GroupAction:
    """Gridworld: the grid rotated by multiples of 90°, the four moves cycled (order 4)."""
    return make_env_action("grid_rot90")


def cartpole_reflect() -> GroupAction:
    """CartPole: the mirror (state negated), left and right pushes swapped."""
    return make_env_action("cartpole_reflect")


def acrobot_reflect() -> GroupAction:
    """Acrobot: the mirror (sines and angular velocities negated), torques reversed."""
    return make_env_action("acrobot_reflect")


def transform_state(name: str, state: Any, g: int) -> Any:
    """``g`` applied to an internal state: a :class:`Layout` for the Gridworld,
    ``env.unwrapped.state`` (a float64 array) for CartPole and Acrobot."""
    sym = _symmetry(name)
    return sym.state(state, _element(sym, g))


def transform_action(name: str, action: int, g: int) -> int:
    """``g·a = σ^g(a)``: the action that plays the role of ``a`` in the transformed state."""
    sym = _symmetry(name)
    a = int(action)
    for _ in range(_element(sym, g)):
        a = sym.action_perm[a]
    return a
