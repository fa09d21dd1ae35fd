"""Equivariance checks: measure ``‖F(g·x) − g·F(x)‖`` for every group element.

Use float64 models and inputs for exact checks; symmetrizers are then equivariant to ~1e-12.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from equiv.groups import GroupAction

Model = Callable[[Tensor], Tensor]


def _elements(action: GroupAction, elements: Iterable[int] | None) -> list[int]:
    return list(action.elements if elements is None else elements)


@torch.no_grad()
def equivariance_error(model: Model, action: GroupAction, x: Tensor,
                       elements: Iterable[int] | None = None, invariant: bool = False) -> float:
    """Max over ``g`` and entries of ``|F(g·x) − g·F(x)|`` (``|F(g·x) − F(x)|`` if invariant).

    Every call of ``model`` starts from the same random state (the caller's is left as it
    was), so a model in training mode is compared under the same dropout draws: a symmetrizer
    whose views share their masks is then exactly equivariant, one that draws a mask per view
    is not.
    """
    with torch.random.fork_rng():
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

        def run(inp: Tensor) -> Tensor:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
            return model(inp)

        y = run(x)
        worst = 0.0
        for g in _elements(action, elements):
            target = y if invariant else action.act_out(y, g)
            worst = max(worst, (run(action.act_in(x, g)) - target).abs().max().item())
    return worst


@torch.no_grad()
def composition_error(action: GroupAction, x: Tensor) -> float:
    """Max over ``g, h`` and entries of ``|a(g, a(h, x)) − a(gh, x)|``: how far ``action`` is from
    a group action on ``x``. Zero for the suite's pixel permutations and token maps; for turns by
    45° (``rot45``) the error of interpolating twice, which is why no symmetrizer over them is
    exactly invariant under the odd elements."""
    worst = 0.0
    for h in action.elements:
        moved = action.act_in(x, h)
        for g in action.elements:
            direct = action.act_in(x, action.compose(g, h))
            worst = max(worst, (action.act_in(moved, g) - direct).abs().max().item())
    return worst


def _scale(model: Model, x: Tensor) -> float:
    with torch.no_grad(), torch.random.fork_rng():      # leaves the caller's random state
        return max(1.0, model(x).abs().max().item())


def assert_equivariant(model: Model, action: GroupAction, x: Tensor, atol: float = 1e-9,
                       rtol: float = 1e-9, elements: Iterable[int] | None = None) -> None:
    """Raise ``AssertionError`` unless ``F(g·x) == g·F(x)`` within ``atol + rtol·max|F|``."""
    err = equivariance_error(model, action, x, elements)
    tol = atol + rtol * _scale(model, x)
    if not err <= tol:
        raise AssertionError(f"{action.name}: equivariance error {err:.3e} > tolerance {tol:.1e}")


def assert_invariant(model: Model, action: GroupAction, x: Tensor, atol: float = 1e-9,
                     rtol: float = 1e-9, elements: Iterable[int] | None = None) -> None:
    """Raise ``AssertionError`` unless ``F(g·x) == F(x)`` within ``atol + rtol·max|F|``."""
    err = equivariance_error(model, action, x, elements, invariant=True)
    tol = atol + rtol * _scale(model, x)
    if not err <= tol:
        raise AssertionError(f"{action.name}: invariance error {err:.3e} > tolerance {tol:.1e}")
