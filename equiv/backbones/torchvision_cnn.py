"""torchvision's ImageNet CNNs (ResNet-18, AlexNet) as backbones with a new classification head.

The paper transfers torchvision's ImageNet ResNet-18 and AlexNet to rot90-CIFAR10. Weights come
only from a checkpoint file already on disk (the caller finds it under ``cache_dir``;
``scripts/prefetch.py`` downloads it): nothing is downloaded here and nothing is silently
replaced by random weights (``weights_file=None`` is the explicit random initialisation).

Inputs are images in [0, 1] (or uint8) of any square size. The adapter resizes them to
``input_size`` (bilinear, like torchvision's ``Resize``) and normalises them with the weights'
ImageNet statistics. Resizing a square image commutes with 90° rotations and flips, so the group
may act on the small stored images instead of the 224-pixel ones.

Heads (``head``):

* ``replace``: the ImageNet classifier's last layer is replaced by a new ``Linear(·, classes)``.
  ResNet-18: on its 512 pooled features. AlexNet: after its first two pretrained fully connected
  layers (4096 features).
* ``authors``: the authors' head on the convolutional trunk ``children()[:-1]``. A
  ``Linear(d·d, 1)`` is shared by the channels over each channel's d×d map, then
  ``Linear(C, classes)`` follows (ResNet-18: d=1, C=512; AlexNet: d=6, C=256). The features
  (λ's input) are the flattened maps, 512 and 9216 values, so the added parameters match the
  paper's rebuttal (66.6k and 934k with the λ-network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equiv.errors import ConfigError, MissingResourceError

ARCHS = ("resnet18", "alexnet")
HEADS = ("replace", "authors")
WEIGHT_ENUMS = {"resnet18": "ResNet18_Weights", "alexnet": "AlexNet_Weights"}
MIN_INPUT_SIZE = {"resnet18": 1, "alexnet": 63}   # AlexNet's last max-pool needs a 3×3 map


def imagenet_weights(arch: str, tag: str = "IMAGENET1K_V1") -> Any:
    """torchvision's weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``."""
    from torchvision import models

    return getattr(models, WEIGHT_ENUMS[arch])[tag]


def load_imagenet_state(net: nn.Module, checkpoint: Path, fetch: str) -> None:
    """Load a torchvision checkpoint (``weights_only``); a bad file fails with the fetch command."""
    if not Path(checkpoint).is_file():
        raise MissingResourceError(f"ImageNet weights {Path(checkpoint).name}", [checkpoint], fetch)
    try:
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except Exception as err:  # truncated download, wrong file, ...
        raise ConfigError(f"cannot load ImageNet weights {checkpoint} ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); delete the file and "
                          f"fetch it again with: {fetch}") from err


class PerChannelHead(nn.Module):
    """The authors' head: ``fc1`` maps each channel's d×d map to one value, ``fc2`` classifies."""

    def __init__(self, channels: int, spatial: int, num_classes: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(spatial, 1)
        self.fc2 = nn.Linear(channels, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        maps = features.reshape(features.shape[0], self.channels, -1)
        return self.fc2(self.fc1(maps).squeeze(-1))


def split_network(net: nn.Module, arch: str, head: str,
                  num_classes: int) -> tuple[nn.Module, nn.Module, int]:
    """``(trunk, new head, feature size)`` of a torchvision network (its weights already in)."""
    if arch == "resnet18":
        trunk: nn.Module = nn.Sequential(*list(net.children())[:-1], nn.Flatten())
        channels, spatial = net.fc.in_features, 1
        if head == "replace":
            return trunk, nn.Linear(channels, num_classes), channels
    elif arch == "alexnet":
        convs = [net.features, net.avgpool, nn.Flatten()]
        channels, spatial = net.features[-3].out_channels, 6 * 6
        if head == "replace":
            kept = list(net.classifier.children())[:-1]    # dropout fc6 relu dropout fc7 relu
            last = net.classifier[-1].in_features
            return nn.Sequential(*convs, *kept), nn.Linear(last, num_classes), last
        trunk = nn.Sequential(*convs)
    else:
        raise ValueError(f"unknown torchvision architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if head != "authors":
        raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    return trunk, PerChannelHead(channels, spatial, num_classes), channels * spatial


class TorchvisionCNN(nn.Module):
    """``preprocess → trunk`` (the ``features``) ``→ classifier`` (the new ``head``).

    ``weights_file``: a torchvision ImageNet state dict file, loaded before the ImageNet head is
    replaced; ``None`` = random initialisation (explicitly asked for). ``weights``: the tag
    whose normalisation statistics apply. Call ``eval()`` before testing (BatchNorm, dropout).
    """

    def __init__(self, arch: str, num_classes: int, head: str = "replace",
                 input_size: int = 224, weights_file: Path | None = None,
                 weights: str = "IMAGENET1K_V1",
                 fetch: str = "python scripts/prefetch.py task=cnn_cifar10_rot90") -> None:
        super().__init__()
        from torchvision import models

        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
        if input_size < MIN_INPUT_SIZE[arch]:
            raise ValueError(f"{arch} needs input_size >= {MIN_INPUT_SIZE[arch]}")
        net = getattr(models, arch)(weights=None)
        if weights_file is not None:
            load_imagenet_state(net, weights_file, fetch)
        stats = imagenet_weights(arch, weights).transforms()
        self.register_buffer("mean", torch.tensor(stats.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats.std).view(1, 3, 1, 1), persistent=False)
        self.arch, self.input_size, self.pretrained = arch, input_size, weights_file is not None
        self.trunk, self.classifier, self.feature_dim = split_network(net, arch, head, num_classes)

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (or uint8) → ``input_size`` pixels, ImageNet-normalised."""
        x = x.to(self.mean.dtype) / 255.0 if not x.is_floating_point() else x
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(self.preprocess(x))

    def head(self, features: Tensor) -> Tensor:
        return self.classifier(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
