"""Dropout that keeps a symmetrized model equivariant while it trains.

A symmetrizer runs the ``|G|`` views ``g·x`` of a batch as one group-major stack
``[|G|·B, ...]``. Ordinary dropout draws a mask per row, so the views of one example see
different masks and ``F(g·x) ≠ g·F(x)`` in training mode. :class:`GroupDropout` draws ONE mask
per example, ``[1, B, ...]``, and applies it to the stack viewed as ``[|G|, B, ...]``: the
views of ``g·x`` are those of ``x`` permuted along the group axis, so with the same random state
both see the same masks and the wrapped model is exactly equivariant in training mode too.

The group order is bound only while a symmetrizer calls the module (:func:`shared_masks`);
unbound, or in eval mode, it is ``F.dropout`` itself (same random draws, same values), so a
backbone using it pretrains and evaluates exactly as with ``nn.Dropout``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn


class GroupDropout(nn.Module):
    """``nn.Dropout`` whose mask is shared by the ``group_order`` views of each example.

    Rows are read group-major: row ``g·B + b`` is view ``g`` of example ``b``. With
    ``group_order`` None or 1 (the default) it is plain ``F.dropout``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.group_order: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        order = self.group_order
        if not self.training or self.p == 0.0 or order is None or order == 1:
            return F.dropout(x, self.p, self.training)
        if x.shape[0] % order:
            raise ValueError(f"{x.shape[0]} rows are not a group-major stack of {order} views")
        batch = x.shape[0] // order
        mask = F.dropout(x.new_ones(1, batch, *x.shape[1:]), self.p, True)   # 0 or 1/(1-p)
        return (x.view(order, batch, *x.shape[1:]) * mask).view_as(x)

    def masks(self, steps: int, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
        """The multipliers (0 or 1/(1-p)) of ``steps`` consecutive calls on ``shape`` inputs,
        ``[steps, *shape]``, drawn as those calls draw them (one Bernoulli fill per call, in
        order), so ``x_t * masks[t]`` equals the ``t``-th call to the bit; a loop saves a
        division and an allocation per step. None where a call draws no per-row CPU mask
        (eval mode, p of 0 or 1, a bound group order, CUDA's fused kernel): call the module."""
        if (not self.training or not 0.0 < self.p < 1.0 or self.group_order not in (None, 1)
                or like.device.type != "cpu"):
            return None
        keep = like.new_empty(steps, *shape)
        for mask in keep:
            mask.bernoulli_(1 - self.p)
        return keep.div_(1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, group_order={self.group_order}"


@contextmanager
def shared_masks(module: nn.Module | None, order: int) -> Iterator[None]:
    """Within the block, every :class:`GroupDropout` in ``module`` shares its masks across
    ``order`` group-major views; the previous binding is restored afterwards (nesting is safe)."""
    drops = [] if module is None else [m for m in module.modules() if isinstance(m, GroupDropout)]
    before = [d.group_order for d in drops]
    for d in drops:
        d.group_order = order
    try:
        yield
    finally:
        for d, old in zip(drops, before, strict=True):
            d.group_order = old


def warn_per_view_dropout(net: nn.Module, what: str = "the λ-network") -> None:
    """Warn when ``net`` has an ordinary ``nn.Dropout``: in training mode it draws one mask per
    view, so the symmetrized model is not equivariant until ``.eval()`` (use GroupDropout)."""
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in net.modules()):
        warnings.warn(f"{what} uses nn.Dropout: its masks differ between the views of an "
                      "example, so the model is not equivariant in training mode; use "
                      "equiv.methods.dropout.GroupDropout", stacklevel=3)
