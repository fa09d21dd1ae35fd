"""λ-equitune: ``Σ_g λ(g·x) g⁻¹·M(g·x) / Σ_g λ(g·x)`` with one λ-network shared by all ``g``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from equiv.groups import GroupAction
from equiv.methods.base import Symmetrizer, batched_call
from equiv.methods.dropout import GroupDropout, shared_masks, warn_per_view_dropout

Normalization = Literal["softplus", "softmax"]
LambdaInput = Literal["input", "features"]


class LambdaNet(nn.Module):
    """The paper's weight network: a 3-layer MLP giving one unconstrained score per input.

    ``Linear(d, h) → ReLU → Dropout → Linear(h, h) → Dropout → Linear(h, 1)`` as in the authors'
    ``WeightNet`` (hidden 100, dropout 0.5); positivity is imposed by ``LambdaEquitune``. The
    dropout is :class:`GroupDropout`: called through :func:`view_scores`, the ``|G|`` views of an
    example share one mask, so λ-equitune stays equivariant in training mode (eval: unchanged).
    """

    def __init__(self, in_features: int, hidden: int = 100, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), GroupDropout(dropout),
            nn.Linear(hidden, hidden), GroupDropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float() if not x.is_floating_point() else x).squeeze(-1)


def lambda_in_features(backbone: nn.Module, lambda_input: LambdaInput,
                       input_shape: Sequence[int] | None) -> int:
    """The λ-network's input size: the backbone's ``feature_dim``, or one input's size."""
    if lambda_input == "features":
        if getattr(backbone, "feature_dim", None) is None:
            raise ValueError("lambda_input='features' needs a backbone with feature_dim")
        return int(backbone.feature_dim)
    if input_shape is None:
        raise ValueError("lambda_input='input' needs the input shape (input_shape)")
    return math.prod(input_shape)


def view_scores(lambda_net: nn.Module, stack: Tensor, order: int) -> Tensor:
    """λ's raw scores ``[|G|, B]`` of a whole group-major stack ``[|G|·B, ...]`` of views, in
    one call so that each example's views share its dropout masks (never call it on a chunk)."""
    with shared_masks(lambda_net, order):
        return lambda_net(stack).view(order, -1)


def normalize_weights(scores: Tensor, normalization: Normalization, eps: float = 1e-6) -> Tensor:
    """Positive weights summing to one over the group axis (dim 0) from raw λ scores."""
    if normalization == "softmax":
        return scores.softmax(dim=0)
    if normalization == "softplus":
        positive = F.softplus(scores) + eps
        return positive / positive.sum(dim=0, keepdim=True)
    raise ValueError(f"normalization must be 'softplus' or 'softmax', got {normalization!r}")


class LambdaEquitune(Symmetrizer):
    """λ-weighted group average, exactly equivariant for any λ-network.

    ``lambda_input='input'`` scores the transformed input ``g·x``; ``'features'`` scores the
    backbone's features of it (the authors' choice), which needs a backbone with ``features`` and
    ``head`` and costs no extra backbone pass. ``detach_features`` keeps λ's gradient out of the
    backbone, as the authors' frozen second copy did, without keeping a second copy.

    Without a ``lambda_net`` the paper's :class:`LambdaNet` (``hidden``, ``dropout``) is built
    on the backbone's ``feature_dim`` or, scoring inputs, on ``input_shape`` (one example).
    The defaults are ``equiv/configs/method/lambda_equitune.yaml``'s (a test keeps them equal).
    """

    def __init__(self, backbone: nn.Module, action: GroupAction,
                 lambda_net: nn.Module | None = None, normalization: Normalization = "softplus",
                 lambda_input: LambdaInput = "features", detach_features: bool = True,
                 hidden: int = 100, dropout: float = 0.5,
                 input_shape: Sequence[int] | None = None, chunk_size: int | None = None) -> None:
        super().__init__(backbone, action, chunk_size)
        if lambda_input == "features" and not (hasattr(backbone, "features")
                                               and hasattr(backbone, "head")):
            raise ValueError("lambda_input='features' needs a backbone with features() and head()")
        if lambda_input not in ("input", "features"):
            raise ValueError(f"lambda_input must be 'input' or 'features', got {lambda_input!r}")
        if normalization not in ("softplus", "softmax"):
            raise ValueError(
                f"normalization must be 'softplus' or 'softmax', got {normalization!r}")
        if lambda_net is None:
            lambda_net = LambdaNet(lambda_in_features(backbone, lambda_input, input_shape),
                                   hidden=hidden, dropout=dropout)
        warn_per_view_dropout(lambda_net)
        self.lambda_net = lambda_net
        self.normalization = normalization
        self.lambda_input = lambda_input
        self.detach_features = detach_features

    def stacked_features(self, x: Tensor) -> Tensor:
        """Backbone features of all views ``g·x`` (group-major), e.g. to cache them when frozen."""
        return batched_call(self.backbone.features, self.action.act_in_all(x), self.chunk_size)

    def combine_features(self, features: Tensor) -> Tensor:
        """Output from precomputed group-major features ``[|G|·B, ...]`` of the views."""
        y = self.backbone.head(features)
        lam_in = features.detach() if self.detach_features else features
        return self._weighted(y, self.scores(lam_in))

    def scores(self, stack: Tensor) -> Tensor:
        """λ's raw scores ``[|G|, B]`` of a full group-major stack (features or inputs)."""
        return view_scores(self.lambda_net, stack, self.action.order)

    def _weighted(self, y: Tensor, scores: Tensor) -> Tensor:
        aligned = self.align(y)                                        # [G, B, ...]
        w = normalize_weights(scores, self.normalization)
        return (w.view(*w.shape, *([1] * (aligned.dim() - 2))) * aligned).sum(dim=0)

    def lambda_weights(self, x: Tensor) -> Tensor:
        """Normalised weights ``[B, |G|]`` given to the views ``g·x``."""
        if self.lambda_input == "features":
            scores = self.scores(self.stacked_features(x))
        else:
            scores = self.scores(self.action.act_in_all(x))
        return normalize_weights(scores, self.normalization).T

    def forward(self, x: Tensor) -> Tensor:
        if self.lambda_input == "features":
            return self.combine_features(self.stacked_features(x))
        gx, y = self.views(x)
        return self._weighted(y, self.scores(gx))       # unchunked: a chunk splits the views

