"""Where the CLIP family's weights and datasets live on disk, checked without importing torch.

``validate`` uses these checks so that a missing download fails in one line, before torch or
open_clip are imported; ``scripts/prefetch.py`` uses the same locations to download into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from equiv.errors import MissingResourceError

OPEN_CLIP_SUBDIR = "open_clip"      # open_clip's ``cache_dir``: <cache_dir>/open_clip
DATA_SUBDIR = "data"                # torchvision roots and extracted archives: <cache_dir>/data


@dataclass(frozen=True)
class PretrainedWeights:
    """One open_clip pretrained tag: its Hugging Face repository and its original URL.

    Copied from open_clip's pretrained table (``open_clip.get_pretrained_cfg``); a test checks
    that they agree with the installed open_clip.
    """

    hf_repo: str
    url: str


OPENAI_WEIGHTS: dict[str, PretrainedWeights] = {
    "RN50": PretrainedWeights(
        "timm/resnet50_clip.openai",
        "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"),
    "RN101": PretrainedWeights(
        "timm/resnet101_clip.openai",
        "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt"),
    "ViT-B-32": PretrainedWeights(
        "timm/vit_base_patch32_clip_224.openai",
        "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"),
    "ViT-B-16": PretrainedWeights(
        "timm/vit_base_patch16_clip_224.openai",
        "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"),
}
# open_clip prefers these files of a Hugging Face repository, in this order.
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
IMAGENET_V2_FOLDER = "imagenetv2-matched-frequency-format-val"
IMAGENET_V2_URL = ("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                   "imagenetv2-matched-frequency.tar.gz")


def open_clip_cache(cache_dir: Path) -> Path:
    return Path(cache_dir) / OPEN_CLIP_SUBDIR


def data_root(cache_dir: Path) -> Path:
    return Path(cache_dir) / DATA_SUBDIR


def prefetch_command(task: str, backbone: str, dataset: str | None = None) -> str:
    extra = f" task.dataset={dataset}" if dataset else ""
    return f"python scripts/prefetch.py task={task} backbone={backbone}{extra}"


def weight_candidates(arch: str, cache_dir: Path) -> list[Path]:
    """Every place open_clip's download puts the weights of ``arch`` (tag openai)."""
    w = OPENAI_WEIGHTS[arch]
    root = open_clip_cache(cache_dir)
    hf_dir = root / ("models--" + w.hf_repo.replace("/", "--")) / "snapshots"
    return [*(hf_dir / "*" / name for name in HF_WEIGHT_FILES), root / Path(w.url).name]


def find_weights(arch: str, cache_dir: Path) -> Path | None:
    """The downloaded weights of ``arch`` (tag openai), or ``None``."""
    for candidate in weight_candidates(arch, cache_dir):
        if "*" in str(candidate):
            found = sorted(candidate.parent.parent.glob(f"*/{candidate.name}"))
            if found and found[-1].is_file():
                return found[-1]
        elif candidate.is_file():
            return candidate
    return None


def require_weights(arch: str, tag: str, cache_dir: Path, fetch: str) -> Path:
    if tag != "openai" or arch not in OPENAI_WEIGHTS:
        raise MissingResourceError(f"open_clip weights {arch}/{tag}", [],
                                   f"{fetch} (only tag 'openai' of "
                                   f"{', '.join(OPENAI_WEIGHTS)} is known here)")
    path = find_weights(arch, cache_dir)
    if path is None:
        raise MissingResourceError(f"open_clip weights {arch}/{tag}",
                                   weight_candidates(arch, cache_dir), fetch)
    return path


def dataset_location(dataset: str, cache_dir: Path) -> Path | None:
    """The folder a dataset is read from (``None`` for the generated synthetic data)."""
    if dataset in CIFAR_FOLDERS:
        return data_root(cache_dir) / CIFAR_FOLDERS[dataset]
    if dataset == "imagenet_v2":
        return data_root(cache_dir) / IMAGENET_V2_FOLDER
    return None


def require_dataset(dataset: str, cache_dir: Path, fetch: str) -> None:
    folder = dataset_location(dataset, cache_dir)
    if folder is None:
        return
    present = folder.is_dir() and (
        (folder / "0").is_dir() if dataset == "imagenet_v2" else any(folder.iterdir()))
    if not present:
        name = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                "imagenet_v2": "ImageNet-V2 (matched-frequency)"}[dataset]
        raise MissingResourceError(f"dataset {name}", [folder], fetch)
