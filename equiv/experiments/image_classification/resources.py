"""Where the image family's downloads live, checked without importing torch.

torchvision ImageNet checkpoints are kept as torch.hub keeps them, under
``<cache_dir>/torch/hub/checkpoints/<file name of the weights' URL>`` (so downloading with
``TORCH_HOME=<cache_dir>/torch``, or copying ``~/.cache/torch/hub``, works too); CIFAR-10
under ``<cache_dir>/data`` (torchvision's layout, shared with the CLIP family). ``validate``
refuses missing files in one line before torch loads; ``scripts/prefetch.py`` downloads into
the same places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from equiv.errors import MissingResourceError

if TYPE_CHECKING:
    from omegaconf import DictConfig

TORCH_SUBDIR = "torch"
IMAGENET_BACKBONES = ("tv_resnet18", "tv_alexnet")        # torchvision ImageNet weights


@dataclass(frozen=True)
class ImagenetWeights:
    """One torchvision weights entry: its enum, tag and download URL.

    Copied from torchvision's weight enums; a test checks that they agree with the installed
    torchvision (the URL's file name carries the checkpoint's SHA-256 prefix).
    """

    enum: str
    tag: str
    url: str

    @property
    def name(self) -> str:
        return f"{self.enum}.{self.tag}"

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


TORCHVISION_WEIGHTS = {
    "resnet18": ImagenetWeights("ResNet18_Weights", "IMAGENET1K_V1",
                                "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "alexnet": ImagenetWeights("AlexNet_Weights", "IMAGENET1K_V1",
                               "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}


def checkpoints_dir(cache_dir: str | Path) -> Path:
    """torch.hub's ``model_dir`` inside the suite's cache."""
    return Path(cache_dir) / TORCH_SUBDIR / "hub" / "checkpoints"


def weights_path(arch: str, cache_dir: str | Path) -> Path:
    return checkpoints_dir(cache_dir) / TORCHVISION_WEIGHTS[arch].file_name


def prefetch_command(task: str, backbone: str | None = None, cache_dir: str | Path = "cache",
                     data_root: str | Path | None = None) -> str:
    """The command that fetches what a run lacks (non-default choices spelled out)."""
    extra = f" backbone={backbone}" if backbone else ""
    if str(cache_dir) != "cache":
        extra += f" cache_dir={cache_dir}"
    if data_root:
        extra += f" task.data.root={data_root}"
    return f"python scripts/prefetch.py task={task}{extra}"


def require_weights(arch: str, cache_dir: str | Path, fetch: str) -> Path:
    """The checkpoint of ``arch``'s ImageNet weights, which must be on disk."""
    w, path = TORCHVISION_WEIGHTS[arch], weights_path(arch, cache_dir)
    if not path.is_file():
        raise MissingResourceError(f"torchvision ImageNet weights {w.name} ({w.file_name})",
                                   [path], fetch)
    return path


def fetch_command(cfg: DictConfig) -> str:
    """The ``scripts/prefetch.py`` command that fetches everything this run needs."""
    b = cfg.backbone
    weights = b.name in IMAGENET_BACKBONES and b.pretrained
    return prefetch_command(cfg.task.name, b.name if weights else None, cfg.cache_dir,
                            cfg.task.data.get("root"))
