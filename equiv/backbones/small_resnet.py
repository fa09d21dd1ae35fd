"""A ResNet-18-shaped residual CNN for small grey images (Fashion-MNIST), pretrained by the suite.

The paper transfers torchvision's ImageNet ResNet-18; offline we keep its layout (a stem, four
stages of two basic blocks, stride-2 downsampling between stages, BatchNorm, global average
pooling, a linear head) at a width that pretrains in minutes on a CPU. The stem is a single 3×3
convolution without max-pooling because 28×28 inputs cannot afford ImageNet's 4× reduction.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem → stages of ``BasicBlock``s (width doubling, stride 2 after the first stage) →
    global average pooling (the ``features``) → linear ``head``.

    Not rotation-invariant: its filters and zero padding see orientation, so the rotated test
    set is a real transfer problem. ``features``/``head`` give λ-equitune the backbone's own
    features, as for ``SmallCNN``; call ``eval()`` before testing (BatchNorm).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 8,
                 blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, width), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            stages += [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1)
                       for j in range(n)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_in, num_classes)
        self.feature_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor) -> Tensor:
        return self.pool(self.stages(self.stem(x)))

    def head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
