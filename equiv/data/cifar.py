"""CIFAR-10/100 through torchvision, never downloaded at run time.

The data must already be under ``root`` (``scripts/prefetch.py`` puts it there); a missing or
corrupted copy raises ``MissingResourceError`` naming the folder and the fetch command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from equiv.config import MissingResourceError

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
DEFAULT_FETCH = "python scripts/prefetch.py task=clip_rot90 task.dataset={name}"


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
