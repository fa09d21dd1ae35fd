"""Finite groups given by their Cayley table, acting on inputs and outputs through representations.

A group element is an integer ``0 .. order-1`` (0 is the identity). Every action accepts either a
single element (``int``) or one element per example (a ``LongTensor`` of shape ``[B]``), so that
per-example random test transforms and the ``|G|·B`` stacked views of the symmetrizers both go
through one vectorised code path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

Element = int | Tensor


def as_element_tensor(g: Element, batch: int, device: torch.device) -> Tensor:
    """One group element per example, as a LongTensor of shape ``[batch]``."""
    if isinstance(g, Tensor):
        if g.shape != (batch,):
            raise ValueError(f"expected one group element per example, shape ({batch},), got "
                             f"{tuple(g.shape)}")
        return g.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(g), dtype=torch.long, device=device)


class Representation(ABC):
    """How group elements act on one kind of tensor (images, token ids, logits, ...)."""

    @abstractmethod
    def apply(self, x: Tensor, g: Tensor) -> Tensor:
        """Act with element ``g[b]`` on example ``x[b]``; ``g`` is a LongTensor ``[B]``."""

    def apply_all(self, x: Tensor, order: int) -> Tensor:
        """Every element ``0 .. order-1`` on the whole batch, group-major ``[order·B, ...]``.

        The symmetrizers' hot path; representations override it when acting with one element
        on a whole batch is cheaper than a per-row action on ``order`` stacked copies.
        """
        stacked = x.repeat(order, *([1] * (x.dim() - 1)))
        elements = torch.arange(order, device=x.device).repeat_interleave(x.shape[0])
        return self.apply(stacked, elements)


class TrivialRepresentation(Representation):
    """Every element acts as the identity: invariant outputs (e.g. class logits)."""

    def apply(self, x: Tensor, g: Tensor) -> Tensor:
        return x

    def apply_all(self, x: Tensor, order: int) -> Tensor:
        return x.repeat(order, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class CayleyTable:
    """Multiplication table ``table[g][h] = g·h`` of a finite group, identity at index 0."""

    table: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.table)
        if any(len(row) != n for row in self.table):
            raise ValueError("Cayley table must be square")
        if list(self.table[0]) != list(range(n)):
            raise ValueError("element 0 must be the identity")

    @property
    def order(self) -> int:
        return len(self.table)

    def compose(self, g: int, h: int) -> int:
        return self.table[g][h]

    def inverse(self, g: int) -> int:
        return self.table[g].index(0)


class GroupAction:
    """A finite group with a representation on model inputs and one on model outputs.

    Equivariance of a model ``F`` means ``F(act_in(x, g)) == act_out(F(x), g)`` for every ``g``.
    """

    def __init__(self, name: str, cayley: CayleyTable, rep_in: Representation,
                 rep_out: Representation) -> None:
        self.name = name
        self.cayley = cayley
        self.rep_in = rep_in
        self.rep_out = rep_out
        self._inverse_table = torch.tensor([cayley.inverse(g) for g in range(cayley.order)])

    def __repr__(self) -> str:
        return f"GroupAction({self.name!r}, order={self.order})"

    @property
    def order(self) -> int:
        return self.cayley.order

    @property
    def elements(self) -> range:
        return range(self.order)

    def acts_like(self, other: GroupAction) -> bool:
        """The same group acting the same way on inputs, whatever the names: e.g. whether a
        symmetrizer's group is the task's test-time transformation group."""
        return self.cayley == other.cayley and self.rep_in == other.rep_in

    def compose(self, g: int, h: int) -> int:
        """The element ``g·h`` (apply ``h`` first, then ``g``)."""
        return self.cayley.compose(g, h)

    def inverse(self, g: Element) -> Element:
        """``g⁻¹``; element-wise for a tensor of elements."""
        if isinstance(g, Tensor):
            return self._inverse_table.to(g.device)[g]
        return self.cayley.inverse(g)

    def act_in(self, x: Tensor, g: Element) -> Tensor:
        return self.rep_in.apply(x, as_element_tensor(g, x.shape[0], x.device))

    def act_out(self, y: Tensor, g: Element) -> Tensor:
        return self.rep_out.apply(y, as_element_tensor(g, y.shape[0], y.device))

    @property
    def invariant_output(self) -> bool:
        return isinstance(self.rep_out, TrivialRepresentation)

    def stacked_elements(self, batch: int, device: torch.device) -> Tensor:
        """``[g0]*B + [g1]*B + ...``: the element of each row of a group-major ``[|G|·B]`` stack."""
        return torch.arange(self.order, device=device).repeat_interleave(batch)

    def act_in_all(self, x: Tensor) -> Tensor:
        """All ``|G|`` transformed copies of a batch, group-major: ``[|G|·B, ...]``."""
        return self.rep_in.apply_all(x, self.order)

    def act_out_inverse_all(self, y: Tensor) -> Tensor:
        """Map each row ``M(g·x)`` of a group-major stack back by ``g⁻¹``."""
        if self.invariant_output:              # nothing to undo (and no per-call overhead)
            return y
        batch = y.shape[0] // self.order
        g = self.stacked_elements(batch, y.device)
        return self.rep_out.apply(y, self.inverse(g))
