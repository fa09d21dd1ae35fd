"""A small CNN for low-resolution images (digits, Fashion-MNIST), pretrained by the suite itself."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Conv blocks → flatten → hidden layer (the ``features``) → linear ``head``.

    Deliberately not rotation-invariant (no global pooling), so that transfer to rotated images
    is a real test of the symmetrizers. ``features``/``head`` let λ-equitune score views from
    the backbone's own features without a second forward pass.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 channels: Sequence[int] = (16, 32), hidden: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = in_channels, image_size
        for i, c_out in enumerate(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i == len(channels) - 1 or side >= 16:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(),
                                nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))

    def head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
