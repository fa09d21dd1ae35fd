"""Fashion-MNIST (60,000 train / 10,000 test, 28×28 grey, 10 classes) from a local IDX directory.

Nothing is downloaded here: ``scripts/prefetch.py`` does that on a connected machine. Locating
the files is torch-free, so the task's ``validate`` can refuse a missing dataset (exit code 2)
before any heavy import; loading imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from equiv.data.idx import read_idx
from equiv.errors import IdxFormatError, MissingResourceError

if TYPE_CHECKING:
    from equiv.data.digits import ImageSplit

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")     # Debian package dataset-fashion-mnist
FETCH = "python scripts/prefetch.py task=fmnist_rot90"
RESOURCE = "Fashion-MNIST (IDX files train-images-idx3-ubyte[.gz], ...)"


def search_dirs(root: str | Path | None, cache_dir: str | Path) -> list[Path]:
    """Where the IDX files are looked for, in order.

    An explicit ``root`` is the only place: a mistyped path must fail, not silently fall back to
    another copy. Otherwise: the suite's cache, the Debian package, torchvision's download layout.
    """
    if root:
        return [Path(root)]
    cache = Path(cache_dir)
    return [cache / "fashion-mnist", SYSTEM_DIR, cache / "FashionMNIST" / "raw"]


def files_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (uncompressed preferred over ``.gz``), or None if any lacks."""
    found = {}
    for key, stem in FILES.items():
        path = next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def locate(root: str | Path | None, cache_dir: str | Path) -> dict[str, Path]:
    """The dataset's files from the first complete folder of ``search_dirs``; torch-free."""
    folders = search_dirs(root, cache_dir)
    for folder in folders:
        found = files_in(folder)
        if found is not None:
            return found
    raise MissingResourceError(RESOURCE, folders, FETCH)


def read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]``, checked against each other."""
    x, y = read_idx(images, ndim=3), read_idx(labels, ndim=1)
    if x.dtype != np.uint8 or y.dtype != np.uint8:
        raise IdxFormatError(f"{images} / {labels}: expected uint8 data")
    if len(x) != len(y):
        raise IdxFormatError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    if len(y) and int(y.max()) >= len(CLASS_NAMES):
        raise IdxFormatError(f"{labels}: label {int(y.max())} outside 0..{len(CLASS_NAMES) - 1}")
    return x, y


def subset(n_total: int, size: int | None, seed: int) -> np.ndarray:
    """A fixed seeded subset of ``size`` indices (all when None), in file order."""
    if size is None or size >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:size])


def load_fashion_mnist_split(root: str | Path | None, cache_dir: str | Path,
                             train_size: int | None = None, test_size: int | None = None,
                             split_seed: int = 0) -> ImageSplit:
    """The official train/test split as float images in [0, 1] ``[N, 1, 28, 28]``.

    ``train_size``/``test_size`` keep fixed seeded subsets (the same for every method and run
    seed) when CPU time is short; None keeps everything.
    """
    import torch

    from equiv.data.digits import ImageSplit

    files = locate(root, cache_dir)
    parts = []
    for kind, size, salt in (("train", train_size, 0), ("test", test_size, 1)):
        x, y = read_pair(files[f"{kind}_images"], files[f"{kind}_labels"])
        keep = subset(len(y), size, split_seed * 2 + salt)
        parts += [torch.from_numpy(x[keep].astype(np.float32) / 255.0).unsqueeze(1),
                  torch.from_numpy(y[keep].astype(np.int64))]
    x_train, y_train, x_test, y_test = parts
    return ImageSplit(x_train, y_train, x_test, y_test, num_classes=len(CLASS_NAMES),
                      class_names=CLASS_NAMES)
