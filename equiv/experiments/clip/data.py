"""The CLIP family's datasets as map-style datasets of ``(preprocessed image, label, index)``.

CIFAR and ImageNet-V2 come from ``cache_dir`` (never downloaded here); ``synthetic`` is a small
seeded set of class-dependent colour patterns for tests. Images go through open_clip's own
preprocessing; group transformations act on the preprocessed square tensors, as in the
authors' code (exact for rotations and flips).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from equiv.data.cifar import load_cifar
from equiv.data.clip_prompts import CIFAR10_CLASSNAMES, CIFAR_TEMPLATES, prompts_for
from equiv.data.imagenet_v2 import ImageNetV2
from equiv.experiments.clip.resources import data_root, dataset_location, prefetch_command

Transform = Callable[[Any], Tensor]


class SyntheticImages:
    """``n`` seeded 32×32 RGB images: a per-class random low-frequency pattern plus noise.

    Not upright-symmetric, so rotations change the images; small enough for tests in seconds.
    """

    def __init__(self, n: int, classes: int, seed: int, size: int = 32) -> None:
        rng = np.random.default_rng(seed)
        coarse = rng.uniform(0, 255, (classes, 4, 4, 3))
        patterns = coarse.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
        self.targets = rng.integers(0, classes, n).tolist()
        noise = rng.normal(0, 25, (n, size, size, 3))
        self.images = np.clip(patterns[self.targets] + noise, 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


class Indexed(Dataset):
    """``(preprocess(image), label, index)``: the index picks each image's group element."""

    def __init__(self, base: Any, preprocess: Transform, limit: int | None = None) -> None:
        self.base, self.preprocess = base, preprocess
        self.n = len(base) if limit is None else min(limit, len(base))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.base[index]
        return self.preprocess(image), int(label), index

    def labels(self) -> Tensor:
        targets = getattr(self.base, "targets", None)
        if targets is None:
            targets = [self.base[i][1] for i in range(self.n)]
        return torch.as_tensor(list(targets[: self.n]))


@dataclass
class ClipData:
    """Test (and, when training, train) splits with the prompts of their classes."""

    test: Indexed
    train: Indexed | None
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def load_data(task: DictConfig, backbone_name: str, cache_dir: Path, preprocess: Transform,
              need_train: bool) -> ClipData:
    name = task.dataset
    limit = task.data.get("limit_test")
    if name == "synthetic":
        s = task.data.synthetic
        classnames = CIFAR10_CLASSNAMES[: s.classes]
        train = SyntheticImages(s.train, s.classes, s.seed + 1) if need_train else None
        return ClipData(Indexed(SyntheticImages(s.test, s.classes, s.seed), preprocess, limit),
                        Indexed(train, preprocess) if train is not None else None,
                        classnames, CIFAR_TEMPLATES)
    classnames, templates = prompts_for(name)
    fetch = prefetch_command(task.name, backbone_name, name if name != "cifar100" else None)
    if name == "imagenet_v2":
        folder = dataset_location(name, cache_dir)
        assert folder is not None
        return ClipData(Indexed(ImageNetV2(folder, fetch=fetch), preprocess, limit), None,
                        classnames, templates)
    root = data_root(cache_dir)
    test = load_cifar(name, root, train=False, fetch=fetch)
    train = load_cifar(name, root, train=True, fetch=fetch) if need_train else None
    return ClipData(Indexed(test, preprocess, limit),
                    Indexed(train, preprocess) if train is not None else None,
                    classnames, templates)
