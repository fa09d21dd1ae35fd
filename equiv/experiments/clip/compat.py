"""The authors' CLIP λ-equitune combination (``task.lambda_combine=authors``), for comparison.

Their code scales each view's normalised image feature by the raw (unnormalised, possibly
negative) λ, takes a softmax per view and averages the views' probabilities with equal weight
(OFFICIAL_CODE.md §1.1): λ acts as a per-view inverse temperature, not a mixture weight. Still
exactly invariant, since the views only get permuted.
"""

from __future__ import annotations

from torch import Tensor

from equiv.methods import LambdaEquitune


class AuthorsLambdaEquitune(LambdaEquitune):
    """``mean_g head(λ(g·x) · f(g·x))`` with the raw λ; use with a ``probs`` head."""

    def combine_features(self, features: Tensor) -> Tensor:
        lam = self.scores(features.detach() if self.detach_features else features).reshape(-1)
        per_view = self.backbone.head(lam.unsqueeze(-1) * features)
        return per_view.view(self.action.order, -1, *per_view.shape[1:]).mean(dim=0)

    def lambda_weights(self, x: Tensor) -> Tensor:
        """The raw λ of each view ``[B, |G|]`` (their code never normalises it)."""
        return self.scores(self.stacked_features(x)).T
