"""sklearn's bundled 8×8 digits (1,797 images): an image task that runs fully offline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageSplit:
    """Train/test tensors: images ``[N, C, H, W]`` in [0, 1], integer labels ``[N]``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def load_digits_split(test_fraction: float = 0.3, split_seed: int = 0) -> ImageSplit:
    """A fixed, stratified, seeded train/test split (the same for every method and run seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]          # [N, 1, 8, 8]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=test_fraction, random_state=split_seed,
        stratify=bunch.target)
    return ImageSplit(torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(),
                      torch.from_numpy(x_te), torch.from_numpy(y_te).long(), num_classes=10)
