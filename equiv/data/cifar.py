"""CIFAR-10/100 through torchvision, never downloaded at run time; and a CIFAR-shaped synthetic set.

The data must already be under ``root`` (``scripts/prefetch.py`` puts it there, by default in
``<cache_dir>/data``, shared by every task family); a missing or corrupted copy raises
``MissingResourceError`` naming the folder and the fetch command. Checking that the files are
there is torch-free, so a task's ``validate`` can refuse early.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from equiv.errors import MissingResourceError

if TYPE_CHECKING:
    from equiv.data.digits import ImageSplit

DATA_SUBDIR = "data"                 # torchvision roots: <cache_dir>/data
FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# The files torchvision's CIFAR datasets read (their integrity is checked when loading).
FILES = {"cifar10": (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
         "cifar100": ("train", "test", "meta")}
NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
DEFAULT_FETCH = "python scripts/prefetch.py task=clip_rot90 task.dataset={name}"


def cifar_root(cache_dir: str | Path, root: str | Path | None = None) -> Path:
    """The torchvision root holding ``cifar-10-batches-py``: ``root`` if given, else the cache's."""
    return Path(root) if root else Path(cache_dir) / DATA_SUBDIR


def require_cifar(name: str, root: str | Path, fetch: str) -> Path:
    """The dataset's folder under ``root``, if every file is there (torch-free check)."""
    folder = Path(root) / FOLDERS[name]
    if not all((folder / f).is_file() for f in FILES[name]):
        raise MissingResourceError(f"dataset {NAMES[name]} ({', '.join(FILES[name])})", [folder],
                                   fetch)
    return folder


def load_cifar(name: str, root: Path, train: bool, transform: Callable[[Any], Any] | None = None,
               fetch: str | None = None) -> Any:
    """The torchvision dataset (PIL images, integer labels) of ``cifar10`` or ``cifar100``."""
    if name not in FOLDERS:
        raise ValueError(f"unknown CIFAR dataset {name!r}; valid: {', '.join(FOLDERS)}")
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    hint = fetch or DEFAULT_FETCH.format(name=name)
    try:
        return cls(str(root), train=train, download=False, transform=transform)
    except RuntimeError as err:          # torchvision: "Dataset not found or corrupted."
        raise MissingResourceError(f"dataset {name} ({'train' if train else 'test'} split)",
                                   [Path(root) / FOLDERS[name]], hint) from err


def download_cifar(name: str, root: Path) -> None:
    """Download both splits into ``root`` (``scripts/prefetch.py``; needs the internet)."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_cifar10_split(root: Path, train_size: int | None = None, test_size: int | None = None,
                       split_seed: int = 0, fetch: str | None = None) -> ImageSplit:
    """The official train/test split as float images in [0, 1] ``[N, 3, 32, 32]`` in memory.

    ``train_size``/``test_size`` keep fixed seeded subsets (the same for every method and run
    seed); None keeps all 50,000 / 10,000. The test split is CIFAR-10's own test set.
    """
    import torch

    from equiv.data.digits import ImageSplit
    from equiv.data.fashion_mnist import subset

    parts = []
    for train, size, salt in ((True, train_size, 0), (False, test_size, 1)):
        ds = load_cifar("cifar10", root, train=train, fetch=fetch)
        keep = subset(len(ds.targets), size, split_seed * 2 + salt)
        images = np.asarray(ds.data)[keep].transpose(0, 3, 1, 2)          # NHWC -> NCHW
        parts += [torch.from_numpy(images.astype(np.float32) / 255.0),
                  torch.as_tensor(np.asarray(ds.targets, dtype=np.int64)[keep])]
    x_train, y_train, x_test, y_test = parts
    return ImageSplit(x_train, y_train, x_test, y_test, num_classes=10,
                      class_names=CIFAR10_CLASSES)


def synthetic_split(train: int, test: int, classes: int = 10, seed: int = 0,
                    size: int = 32) -> ImageSplit:
    """Seeded CIFAR-shaped RGB images for tests: each class a random 4×4 colour layout
    (upsampled) plus noise, so the labels are learnable and no image is rotation-symmetric."""
    import torch

    from equiv.data.digits import ImageSplit

    rng = np.random.default_rng(seed)
    layouts = rng.uniform(0.0, 1.0, (classes, 3, 4, 4)).repeat(size // 4, 2).repeat(size // 4, 3)

    def draw(n: int) -> tuple[Any, Any]:
        labels = rng.integers(0, classes, n)
        images = np.clip(layouts[labels] + rng.normal(0.0, 0.1, (n, 3, size, size)), 0.0, 1.0)
        return (torch.from_numpy(images.astype(np.float32)),
                torch.from_numpy(labels.astype(np.int64)))

    x_train, y_train = draw(train)
    x_test, y_test = draw(test)
    return ImageSplit(x_train, y_train, x_test, y_test, num_classes=classes,
                      class_names=CIFAR10_CLASSES[:classes] if classes <= 10 else ())
