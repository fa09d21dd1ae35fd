"""λ-equitune: ``Σ_g λ(g·x) g⁻¹·M(g·x) / Σ_g λ(g·x)`` with one λ-network shared by all ``g``."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from equiv.groups import GroupAction
from equiv.methods.base import Symmetrizer, batched_call

Normalization = Literal["softplus", "softmax"]
LambdaInput = Literal["input", "features"]


class LambdaNet(nn.Module):
    """The paper's weight network: a 3-layer MLP giving one unconstrained score per input.

    ``Linear(d, h) → ReLU → Dropout → Linear(h, h) → Dropout → Linear(h, 1)`` as in the authors'
    ``WeightNet`` (hidden 100, dropout 0.5); positivity is imposed by ``LambdaEquitune``.
    """

    def __init__(self, in_features: int, hidden: int = 100, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float() if not x.is_floating_point() else x).squeeze(-1)


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
    """

    def __init__(self, backbone: nn.Module, action: GroupAction, lambda_net: nn.Module,
                 normalization: Normalization = "softplus", lambda_input: LambdaInput = "input",
                 detach_features: bool = True, chunk_size: int | None = None) -> None:
        super().__init__(backbone, action, chunk_size)
        if lambda_input == "features" and not (hasattr(backbone, "features")
                                               and hasattr(backbone, "head")):
            raise ValueError("lambda_input='features' needs a backbone with features() and head()")
        if lambda_input not in ("input", "features"):
            raise ValueError(f"lambda_input must be 'input' or 'features', got {lambda_input!r}")
        if normalization not in ("softplus", "softmax"):
            raise ValueError(
                f"normalization must be 'softplus' or 'softmax', got {normalization!r}")
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
        return self._weighted(y, self.lambda_net(lam_in))

    def _weighted(self, y: Tensor, scores: Tensor) -> Tensor:
        aligned = self.align(y)                                        # [G, B, ...]
        w = normalize_weights(scores.view(self.action.order, -1), self.normalization)
        return (w.view(*w.shape, *([1] * (aligned.dim() - 2))) * aligned).sum(dim=0)

    def lambda_weights(self, x: Tensor) -> Tensor:
        """Normalised weights ``[B, |G|]`` given to the views ``g·x``."""
        if self.lambda_input == "features":
            scores = self.lambda_net(self.stacked_features(x))
        else:
            scores = self.lambda_net(self.action.act_in_all(x))
        return normalize_weights(scores.view(self.action.order, -1), self.normalization).T

    def forward(self, x: Tensor) -> Tensor:
        if self.lambda_input == "features":
            return self.combine_features(self.stacked_features(x))
        gx, y = self.views(x)
        return self._weighted(y, batched_call(self.lambda_net, gx, self.chunk_size))

