"""Shared machinery of the symmetrizers: all ``|G|·B`` views through the backbone in one call."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from equiv.groups import GroupAction, trivial

V = TypeVar("V")


def batched_call(fn: nn.Module, x: Tensor, chunk_size: int | None) -> Tensor:
    """``fn(x)``, optionally in chunks of ``chunk_size`` rows when memory requires it."""
    if chunk_size is None or x.shape[0] <= chunk_size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk_size)])


class Symmetrizer(nn.Module):
    """Wraps a backbone ``M`` and a group action; subclasses combine the views ``g⁻¹·M(g·x)``."""

    def __init__(self, backbone: nn.Module, action: GroupAction,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.action = action
        self.chunk_size = chunk_size

    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(g·x, M(g·x))`` for all elements, group-major stacks of ``|G|·B`` rows."""
        gx = self.action.act_in_all(x)
        return gx, batched_call(self.backbone, gx, self.chunk_size)

    def align(self, y: Tensor) -> Tensor:
        """Map a group-major stack ``M(g·x)`` back by ``g⁻¹``; shape ``[|G|, B, ...]``."""
        aligned = self.action.act_out_inverse_all(y)
        return aligned.view(self.action.order, -1, *aligned.shape[1:])

    def group_outputs(self, x: Tensor) -> Tensor:
        """``g⁻¹·M(g·x)`` for every ``g``: ``[|G|, B, ...]``."""
        return self.align(self.views(x)[1])


class Vanilla(Symmetrizer):
    """The pretrained model as it is: the non-equivariant baseline."""

    def __init__(self, backbone: nn.Module, action: GroupAction | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, action or trivial(), chunk_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


class Equitune(Symmetrizer):
    """Group average ``(1/|G|) Σ_g g⁻¹·M(g·x)`` (Basu et al., AAAI 2023)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.group_outputs(x).mean(dim=0)


def method_variant(variants: Mapping[type[Symmetrizer], type[V]], method: str | type,
                   family: str) -> type[V]:
    """The class of a model ``family`` (seq2seq decoding, text generation) that implements
    ``method``: a generic method class (what a config's ``_target_`` names) or the variant's
    config ``name`` (``lambda_equitune``)."""
    named = isinstance(method, str)
    by_key = {getattr(v, "name", None): v for v in variants.values()} if named else variants
    if method not in by_key:
        supported = ", ".join(by_key if named else (m.__name__ for m in variants))
        raise ValueError(f"no {family} variant of method {getattr(method, '__name__', method)!r};"
                         f" supported: {supported}")
    return by_key[method]


def build_variant(variants: Mapping[type[Symmetrizer], type[V]], method: str | type,
                  family: str, *args: Any, **options: Any) -> V:
    """``method_variant(...)(*args, **options)`` given only the options its constructor
    declares: one set of a family's options serves all its variants (equitune takes no λ)."""
    cls = method_variant(variants, method, family)
    known = {p for v in variants.values() for p in inspect.signature(v).parameters}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown {family} options {unknown}; valid: {sorted(known)}")
    accepted = inspect.signature(cls).parameters
    return cls(*args, **{k: v for k, v in options.items() if k in accepted})
