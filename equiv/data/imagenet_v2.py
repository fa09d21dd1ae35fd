"""ImageNet-V2 (matched-frequency) from its extracted release: folders ``0`` … ``999`` of JPEGs.

The folder name is the ImageNet class index (the order of ``IMAGENET_CLASSNAMES``). Nothing is
downloaded at run time: a missing folder raises ``MissingResourceError``.
"""

from __future__ import annotations

import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from equiv.errors import MissingResourceError

FOLDER = "imagenetv2-matched-frequency-format-val"
NUM_CLASSES = 1000
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class ImageNetV2:
    """Map-style dataset of ``(transform(PIL image), label)``, files in a fixed sorted order."""

    def __init__(self, folder: Path, transform: Callable[[Any], Any] | None = None,
                 fetch: str = "python scripts/prefetch.py task=clip_rot90 "
                              "task.dataset=imagenet_v2") -> None:
        folder = Path(folder)
        if not (folder / "0").is_dir():
            raise MissingResourceError("dataset ImageNet-V2 (matched-frequency)", [folder], fetch)
        self.samples: list[tuple[Path, int]] = []
        for label in range(NUM_CLASSES):
            files = sorted(p for p in (folder / str(label)).glob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            self.samples += [(p, label) for p in files]
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            image = img.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def download_imagenet_v2(url: str, root: Path) -> Path:
    """Download the release tarball into ``root`` and extract it (``scripts/prefetch.py``)."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / Path(url).name
    if not archive.is_file():
        partial = archive.with_suffix(".part")
        urllib.request.urlretrieve(url, partial)
        partial.replace(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root / FOLDER
