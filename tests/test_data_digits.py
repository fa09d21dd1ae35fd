"""The digits split: complete, stratified, fixed by its seed, identical to sklearn's data."""

import numpy as np
import pytest
import torch

from equiv.data.digits import load_digits_split


def test_split_is_complete_disjoint_and_stratified():
    s = load_digits_split(0.3, 0)
    assert s.image_shape == (1, 8, 8) and s.num_classes == 10
    assert len(s.x_train) + len(s.x_test) == 1797 and len(s.x_test) == 539
    assert s.x_train.min() >= 0.0 and s.x_train.max() <= 1.0
    share = torch.bincount(s.y_test, minlength=10) / torch.bincount(
        torch.cat([s.y_train, s.y_test]), minlength=10)
    assert torch.all((share - 0.3).abs() < 0.01)


def test_split_depends_only_on_its_seed():
    a, b, c = load_digits_split(0.3, 0), load_digits_split(0.3, 0), load_digits_split(0.3, 1)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_test, c.x_test)


def test_same_images_as_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    s = load_digits_split(0.3, 0)
    ours = torch.cat([s.x_train, s.x_test]).flatten(1).numpy()
    theirs = (bunch.images / 16.0).reshape(-1, 64).astype(np.float32)
    key = lambda a: np.lexsort(a.T[::-1])  # noqa: E731
    assert np.array_equal(ours[key(ours)], theirs[key(theirs)])
