"""Equizero: keep the single view with the smallest proxy loss, ``g*⁻¹·M(g*·x)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from equiv.groups import GroupAction
from equiv.methods.base import Symmetrizer

Proxy = Callable[[Tensor], Tensor]
Surrogate = Literal["equitune", "identity", "chosen"]


def _per_example(values: Tensor) -> Tensor:
    """Average a per-position quantity ``[N, ...]`` to one value per example ``[N]``."""
    if values.dim() == 1:                       # already one per example (classification)
        return values
    return values.reshape(values.shape[0], -1).mean(dim=1)


# The class dimension is reduced as the leading dimension of a transposed view: on CPU,
# (log_)softmax over a short last dimension (10 classes, 128 rows) took 16-19 µs, over the
# leading one 3 µs, which is most of equizero's cost on a small backbone.

def entropy(y: Tensor) -> Tensor:
    """Entropy of the softmax over the last dimension (low = confident)."""
    logp = y.movedim(-1, 0).log_softmax(dim=0)
    return _per_example(-(logp.exp() * logp).sum(dim=0))


def neg_max_prob(y: Tensor) -> Tensor:
    """Minus the largest class probability: the paper's "maximum of the probability" score."""
    return _per_example(-y.movedim(-1, 0).softmax(dim=0).amax(dim=0))


def neg_max_logit(y: Tensor) -> Tensor:
    """Minus the largest score: CLIP image–text similarity, or a DQN's max Q-value."""
    return _per_example(-y.amax(dim=-1))


PROXIES: dict[str, Proxy] = {
    "entropy": entropy,
    "neg_max_prob": neg_max_prob,
    "neg_max_logit": neg_max_logit,
}


def resolve_proxy(proxy: str | Proxy) -> Proxy:
    if callable(proxy):
        return proxy
    if proxy not in PROXIES:
        raise ValueError(f"unknown proxy {proxy!r}; valid: {', '.join(sorted(PROXIES))}")
    return PROXIES[proxy]


class Equizero(Symmetrizer):
    """``g* = argmin_g ℓ(M(g·x))`` per example; output ``g*⁻¹·M(g*·x)``.

    Trainable through a straight-through estimator: the forward value is the equizero output,
    the gradient is that of a surrogate, the equitune mean (default) or the identity view. With
    ``surrogate="chosen"`` there is no estimator: the gradient is the output's own, through the
    selected view(s), exact almost everywhere since the selection is piecewise constant. Deep
    Q-learning needs that one: its TD target is the equizero target network's value, and a
    surrogate gradient moves a different function than the one the target is compared with
    (probes: Gridworld finetuning diverged from 0.60 to −0.80 with the equitune surrogate, and
    reached 0.96 with the chosen view's gradient).

    Ties (within ``tie_tolerance``, relative) are averaged rather than broken by index. Inputs
    with a non-trivial stabiliser (a token sequence without the permuted words, a symmetric
    image) have identical views, and picking one of them would break equivariance; averaging the
    minimisers is λ-equitune with λ the indicator of the argmin set, exactly equivariant always.
    """

    def __init__(self, backbone: nn.Module, action: GroupAction, proxy: str | Proxy,
                 surrogate: Surrogate = "equitune", tie_tolerance: float = 1e-6,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, action, chunk_size)
        if surrogate not in ("equitune", "identity", "chosen"):
            raise ValueError(f"surrogate must be 'equitune', 'identity' or 'chosen', got "
                             f"{surrogate!r}")
        self.proxy = resolve_proxy(proxy)
        self.surrogate = surrogate
        self.tie_tolerance = tie_tolerance

    def _losses(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _, y = self.views(x)
        return self.proxy(y).view(self.action.order, -1), self.align(y)    # [G, B], [G, B, ...]

    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(chosen element g* [B] (lowest index among ties), aligned outputs [|G|, B, ...])``."""
        losses, aligned = self._losses(x)
        return losses.argmin(dim=0), aligned

    def forward(self, x: Tensor) -> Tensor:
        losses, aligned = self._losses(x)
        best = losses.min(dim=0).values
        ties = losses <= torch.add(best, best.abs().clamp_min_(1.0), alpha=self.tie_tolerance)
        weights = ties.to(aligned.dtype)
        weights = weights / weights.sum(dim=0)             # [G, B]: 1/|ties| on each tie
        chosen = (weights.view(*weights.shape, *([1] * (aligned.dim() - 2))) * aligned).sum(0)
        if self.surrogate == "chosen" or not (self.training and torch.is_grad_enabled()):
            return chosen
        surrogate = aligned.mean(dim=0) if self.surrogate == "equitune" else aligned[0]
        return surrogate + (chosen - surrogate).detach()
