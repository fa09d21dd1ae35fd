"""Backbone adapters: every backbone is an ``nn.Module``; image ones add ``features``/``head``."""

from equiv.backbones.small_cnn import SmallCNN
from equiv.backbones.small_resnet import SmallResNet

__all__ = ["SmallCNN", "SmallResNet"]
