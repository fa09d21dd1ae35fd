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
    """Max over ``g`` and entries of ``|F(g·x) − g·F(x)|`` (``|F(g·x) − F(x)|`` if invariant)."""
    y = model(x)
    worst = 0.0
    for g in _elements(action, elements):
        target = y if invariant else action.act_out(y, g)
        worst = max(worst, (model(action.act_in(x, g)) - target).abs().max().item())
    return worst


def _scale(model: Model, x: Tensor) -> float:
    with torch.no_grad():
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
