"""sklearn's bundled 8×8 digits (1,797 images): an image task that runs fully offline.

The CSV that scikit-learn ships is read directly: importing scikit-learn itself (and SciPy) would
cost more than the whole dataset.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

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
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (c, h, w)


def digits_csv() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn is not installed; it ships the digits data "
                                "(pip install scikit-learn)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded split keeping each class's share (rounded) in the test part."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits_split(test_fraction: float = 0.3, split_seed: int = 0) -> ImageSplit:
    """A fixed, stratified, seeded train/test split (the same for every method and run seed)."""
    table = np.loadtxt(digits_csv(), delimiter=",", dtype=np.float32)
    images = (table[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    train, test = stratified_split(labels, test_fraction, split_seed)
    as_tensors = (torch.from_numpy(images[i].copy()) for i in (train, test))
    x_train, x_test = as_tensors
    return ImageSplit(x_train, torch.from_numpy(labels[train]), x_test,
                      torch.from_numpy(labels[test]), num_classes=10,
                      class_names=tuple(str(d) for d in range(10)))
