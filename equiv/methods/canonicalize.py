"""Canonicalization: run the backbone once, on the view a learned canonicalizer calls upright.

Kaba et al. (ICML 2023) and Mondal et al. (NeurIPS 2023): a canonicalizer ``h`` scores every
group element for each input, ``scores[g] = h(x)[g]`` of shape ``[|G|, B]``, equivariantly:
``h(g·x)[k] = h(x)[k·g]`` (the scores of a transformed input are those of the input, permuted).
The chosen element ``g* = argmax_g scores[g]`` names the view ``g*·x`` that the canonicalizer
believes upright, and the output is that view's output mapped back, ``g*⁻¹·M(g*·x)`` (for
invariant outputs simply ``M(g*·x)``). Since ``g·x`` chooses ``g*·g⁻¹`` and so runs the very same
view, the wrapper is exactly equivariant for any backbone ``M``.

Unlike the other symmetrizers, evaluation runs the backbone on ``B`` rows, not ``|G|·B``: only
the selected views are gathered and sent through it in one call. Ties (scores within
``tie_tolerance`` of the best, relative) are averaged, as equizero does; only then do a few
examples send more than one view. Without the averaging an input with a non-trivial stabiliser
(a symmetric image, a command without the permuted words) would break equivariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equiv.groups import GroupAction
from equiv.methods.base import Symmetrizer, batched_call

Gradient = Literal["straight_through", "relaxed"]
GRADIENTS = ("straight_through", "relaxed")


@dataclass(frozen=True)
class Selection:
    """Which views an example needs: rows ``(example[i], element[i])``, example-major, each with
    its averaging weight ``weight[i]`` (``1/|ties|``); ``scores`` are the raw ``[|G|, B]``."""

    example: Tensor
    element: Tensor
    weight: Tensor
    scores: Tensor

    @property
    def unique(self) -> bool:
        """One view per example (no ties): rows are the examples in order."""
        return self.example.numel() == self.scores.shape[1]


def check_canonicalizer(canonicalizer: nn.Module, action: GroupAction,
                        temperature: float) -> None:
    """A canonicalizer that scores the group's elements, and a usable softmax temperature."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    order = getattr(canonicalizer, "order", action.order)
    if order != action.order:
        raise ValueError(f"the canonicalizer scores {order} elements, the group "
                         f"{action.name!r} has {action.order}")


class Canonicalize(Symmetrizer):
    """``g*⁻¹·M(g*·x)`` with ``g*`` the argmax of an equivariant canonicalizer's scores.

    ``canonicalizer(x) -> [|G|, B]`` must be equivariant in the sense above (see
    ``equiv.methods.canonicalizers``). Gradient modes, in training mode only (evaluation is
    always the hard selection):

    - ``"straight_through"`` (default): the forward value is the hard selection, computed on the
      selected views only (``B`` backbone rows in training too). The canonicalizer's gradient is
      that of the one-hot's straight-through estimator (hard one-hot forward, the gradient of
      ``softmax(scores / temperature)`` backward, as in Mondal et al.'s ``equiadapt``), restricted
      to the views that ran: each selected view's weight is ``w + p - stop_gradient(p)``, so the
      task loss raises the probability of a chosen view whose output it likes and lowers it
      otherwise. The views that did not run contribute no gradient (they are not computed).
    - ``"relaxed"``: the forward value is the ``softmax(scores / temperature)``-weighted average
      of all ``|G|`` aligned views (λ-equitune with softmax weights), which gives the
      canonicalizer the full gradient but runs the backbone on all ``|G|·B`` views while
      training; evaluation still runs ``B`` rows. Anneal ``temperature`` towards 0 to close the
      gap between the training and the evaluation function.

    ``prior_weight`` is stored for the protocol: its loss is
    ``task_loss + prior_weight · prior_loss(x_upright)`` (Mondal et al.'s prior regularizer).
    """

    def __init__(self, backbone: nn.Module, action: GroupAction, canonicalizer: nn.Module,
                 gradient: Gradient = "straight_through", temperature: float = 1.0,
                 tie_tolerance: float = 1e-6, prior_weight: float = 1.0,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, action, chunk_size)
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        check_canonicalizer(canonicalizer, action, temperature)
        self.canonicalizer = canonicalizer
        self.gradient = gradient
        self.temperature = temperature
        self.tie_tolerance = tie_tolerance
        self.prior_weight = prior_weight

    def scores(self, x: Tensor) -> Tensor:
        """The canonicalizer's raw scores ``[|G|, B]`` (higher: that view looks upright)."""
        return self.canonicalizer(x)

    def selection(self, x: Tensor, scores: Tensor | None = None) -> Selection:
        """The views to run: each example's argmax, or all of its tied maxima."""
        scores = self.scores(x) if scores is None else scores
        s = scores.detach()
        best = s.max(dim=0).values
        ties = s >= best - best.abs().clamp_min(1.0) * self.tie_tolerance       # [G, B]
        example, element = ties.T.nonzero(as_tuple=True)                        # example-major
        weight = 1.0 / ties.sum(dim=0).to(s.dtype)[example]
        return Selection(example, element, weight, scores)

    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(g* [B] (lowest index among ties), scores [|G|, B])``: ``g*·x`` is the view taken
        as upright. A test image ``t·x_upright`` is canonicalized correctly when ``g* = t⁻¹``."""
        scores = self.scores(x)
        return scores.argmax(dim=0), scores

    @torch.no_grad()
    def identity_share(self, x: Tensor) -> float:
        """Share of the inputs whose chosen element is the identity (their own view is upright):
        on upright data, how well the prior has been learned."""
        return (self.select(x)[0] == 0).double().mean().item()

    def canonical_views(self, x: Tensor, sel: Selection) -> Tensor:
        """The selected views ``element[i]·x[example[i]]``, one row each."""
        rows = x if sel.unique else x.index_select(0, sel.example)
        return self.action.act_in(rows, sel.element)

    def prior_loss(self, x: Tensor) -> Tensor:
        """Mondal et al.'s prior regularizer: cross-entropy of the raw scores against the
        identity element, on inputs from the upright (pretraining) distribution, i.e. "the
        upright view of upright data is the input itself" (equiadapt's
        ``DiscreteGroupCanonicalization.get_prior_regularization_loss``, same formula)."""
        scores = self.scores(x)
        return F.cross_entropy(scores.T, scores.new_zeros(scores.shape[1], dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        scores = self.scores(x)
        if self.training and torch.is_grad_enabled() and self.gradient == "relaxed":
            return self.relaxed(scores, self.group_outputs(x))
        sel = self.selection(x, scores)
        return self.combine(sel, batched_call(self.backbone, self.canonical_views(x, sel),
                                              self.chunk_size))

    def relaxed(self, scores: Tensor, aligned: Tensor) -> Tensor:
        """The relaxed training output: the ``softmax(scores / temperature)``-weighted average
        of the aligned views ``aligned`` (``[|G|, B, ...]``, ``g⁻¹·M(g·x)``)."""
        w = (scores / self.temperature).softmax(dim=0)                          # [G, B]
        return (w.view(*w.shape, *([1] * (aligned.dim() - 2))) * aligned).sum(dim=0)

    def combine(self, sel: Selection, y: Tensor) -> Tensor:
        """The output from the backbone's outputs ``y`` on the selected views (one row per row
        of ``sel``): mapped back by ``g*⁻¹``, ties averaged, and in training the
        straight-through weights. A caller that has ``y`` already (the frozen backbone's
        outputs, cached) gets exactly what ``forward`` computes."""
        training = self.training and torch.is_grad_enabled()
        y = self.action.act_out(y, self.action.inverse(sel.element))            # g*⁻¹·M(g*·x)
        weight = sel.weight
        if training:                        # straight-through: value unchanged, gradient of p
            p = (sel.scores / self.temperature).softmax(dim=0)[sel.element, sel.example]
            weight = weight + (p - p.detach())
        if sel.unique and not training:     # the common case: one view per example, weight 1
            return y
        weighted = weight.view(-1, *([1] * (y.dim() - 1))) * y
        if sel.unique:
            return weighted
        out = y.new_zeros(sel.scores.shape[1], *y.shape[1:])
        return out.index_add(0, sel.example, weighted)
