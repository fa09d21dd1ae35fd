"""Q-networks for DQN: observations ``[B, *obs_shape]`` → Q-values ``[B, n_actions]``.

Both expose ``features``/``head``/``feature_dim`` like :class:`equiv.backbones.SmallCNN`, so
λ-equitune can score the views of a pretrained Q-network from its own features. Both take the
environment's ``obs_shape`` and ``n_actions`` (what the DQN protocol supplies to any Q-network a
config names); the defaults are ``equiv/configs/backbone/qnet_{mlp,cnn}.yaml``'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class QMLP(nn.Module):
    """MLP on flat observations (CartPole, Acrobot): ReLU hidden layers → linear head.

    Inputs with more than one feature dimension are flattened, so a grid works too (without
    any spatial structure).
    """

    def __init__(self, obs_shape: Sequence[int], n_actions: int,
                 hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("QMLP needs at least one hidden layer (its features)")
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = math.prod(obs_shape)
        for d_out in hidden:
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
            d_in = d_out
        self.body = nn.Sequential(*layers)
        self.q = nn.Linear(d_in, n_actions)
        self.feature_dim = d_in

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def head(self, features: Tensor) -> Tensor:
        return self.q(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class QCNN(nn.Module):
    """3×3 conv blocks keeping the ``N×N`` grid (padding 1) → flatten → hidden layer → head,
    on observations ``[C, N, N]``.

    No pooling: the grids are tiny (N ≈ 5–9) and position matters for the Q-values. Like
    :class:`SmallCNN` it is deliberately not rotation-invariant, so that symmetrizing it is a
    real change.
    """

    def __init__(self, obs_shape: Sequence[int], n_actions: int,
                 channels: Sequence[int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        in_channels, grid_size = int(obs_shape[0]), int(obs_shape[1])
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * grid_size * grid_size, hidden),
                                nn.ReLU())
        self.q = nn.Linear(hidden, n_actions)
        self.feature_dim = hidden

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))

    def head(self, features: Tensor) -> Tensor:
        return self.q(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
