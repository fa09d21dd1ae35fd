"""Download what a task needs into ``cache_dir`` (on a machine with internet), so runs are offline.

    python scripts/prefetch.py task=clip_rot90 backbone=clip_rn50 task.dataset=cifar100
    python scripts/prefetch.py task=clip_flip backbone=clip_vitb16 task.dataset=imagenet_v2
    python scripts/prefetch.py task=fmnist_rot90
    python scripts/prefetch.py task=cnn_cifar10_rot90 backbone=tv_alexnet
    python scripts/prefetch.py task=nlg_race_respect
    python scripts/prefetch.py --dry-run task=clip_rot90      # print what and where, fetch nothing

Arguments are the same Hydra overrides as ``run.py`` (the config is composed the same way).
Already present files are kept. CLIP weights go through open_clip's own downloader into
``<cache_dir>/open_clip``; CIFAR into ``<cache_dir>/data`` (torchvision; ``task.data.root`` for
the CNN task when set); ImageNet-V2's tarball is extracted into ``<cache_dir>/data``;
Fashion-MNIST into ``<cache_dir>/FashionMNIST``; torchvision's ImageNet weights through torch.hub
into ``<cache_dir>/torch/hub/checkpoints``; GPT-2 and the regard classifier through transformers'
``from_pretrained(..., cache_dir=<cache_dir>/huggingface)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from omegaconf import DictConfig  # noqa: E402

from equiv.config import register_resolvers  # noqa: E402
from equiv.errors import ConfigError  # noqa: E402
from equiv.experiments.clip import resources  # noqa: E402

CONFIG_DIR = ROOT / "equiv" / "configs"


@dataclass
class Fetch:
    """One download: what, from where, into which folder, and how."""

    what: str
    source: str
    target: Path
    run: Callable[[], object]


def compose(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, "run_subdir=prefetch"])


def clip_weights(arch: str, tag: str, cache_dir: Path) -> Fetch:
    target = resources.open_clip_cache(cache_dir)
    w = resources.OPENAI_WEIGHTS.get(arch)
    source = f"hf://{w.hf_repo} (or {w.url})" if w else f"open_clip tag {arch}/{tag}"

    def run() -> object:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            raise ConfigError(f"open_clip has no pretrained tag {tag!r} for {arch}")
        return open_clip.download_pretrained(cfg, cache_dir=str(target))

    return Fetch(f"CLIP weights {arch}/{tag}", source, target, run)


def clip_dataset(dataset: str, cache_dir: Path) -> Fetch | None:
    root = resources.data_root(cache_dir)
    if dataset in resources.CIFAR_FOLDERS:
        from equiv.data.cifar import download_cifar

        return Fetch(f"{dataset} (train and test)", "torchvision download", root,
                     lambda: download_cifar(dataset, root))
    if dataset == "imagenet_v2":
        from equiv.data.imagenet_v2 import download_imagenet_v2

        return Fetch("ImageNet-V2 matched-frequency", resources.IMAGENET_V2_URL,
                     root / resources.IMAGENET_V2_FOLDER,
                     lambda: download_imagenet_v2(resources.IMAGENET_V2_URL, root))
    return None


def fashion_mnist(cache_dir: Path) -> Fetch:
    def run() -> object:
        from torchvision import datasets

        for train in (True, False):
            datasets.FashionMNIST(str(cache_dir), train=train, download=True)
        return cache_dir / "FashionMNIST"

    return Fetch("Fashion-MNIST (train and test)", "torchvision download",
                 cache_dir / "FashionMNIST", run)


def torchvision_weights(arch: str, cache_dir: Path) -> Fetch:
    """ImageNet weights via torch.hub into the folder the image family reads them from."""
    from equiv.experiments.image_classification.resources import TORCHVISION_WEIGHTS, weights_path

    w, target = TORCHVISION_WEIGHTS[arch], weights_path(arch, cache_dir)

    def run() -> object:
        from torch.hub import load_state_dict_from_url

        load_state_dict_from_url(w.url, model_dir=str(target.parent), check_hash=True,
                                 weights_only=True)
        return target

    return Fetch(f"torchvision weights {w.name}", w.url, target, run)


def cifar10(root: Path) -> Fetch:
    from equiv.data.cifar import download_cifar

    return Fetch("cifar10 (train and test)", "torchvision download", root,
                 lambda: download_cifar("cifar10", root))


def hf_model(what: str, name: str, classes: Sequence[str], cache_dir: Path) -> Fetch:
    """A Hugging Face model (and tokenizer) into the cache the NLG family loads it from."""
    from equiv.backbones.gpt2 import hf_cache_dir

    target = hf_cache_dir(cache_dir)

    def run() -> object:
        import transformers

        for cls in classes:
            getattr(transformers, cls).from_pretrained(name, cache_dir=target)
        return target / ("models--" + name.replace("/", "--"))

    return Fetch(f"{what} {name!r}", f"https://huggingface.co/{name}", target, run)


def nlg_models(cfg: DictConfig, cache_dir: Path) -> list[Fetch]:
    """GPT-2 (weights and tokenizer) and the regard classifier when the task scores with it."""
    task, backbone, method = cfg.task, cfg.backbone, cfg.method
    fetches = []
    if backbone.get("pretrained"):
        name = backbone.get("model_name") or backbone.get("model")
        fetches.append(hf_model("GPT-2 weights and tokenizer", name,
                                ("AutoTokenizer", "GPT2LMHeadModel"), cache_dir))
    if task.get("scorer") == "regard" or (method.name == "equizero"
                                          and method.get("proxy") == "regard"):
        fetches.append(hf_model("regard classifier", task.regard_model,
                                ("AutoTokenizer", "AutoModelForSequenceClassification"),
                                cache_dir))
    return fetches


def image_classification(cfg: DictConfig, cache_dir: Path) -> list[Fetch]:
    from equiv.data.cifar import cifar_root
    from equiv.experiments.image_classification import IMAGENET_BACKBONES

    task, backbone = cfg.task, cfg.backbone
    fetches = []
    if backbone.name in IMAGENET_BACKBONES and backbone.get("pretrained"):
        fetches.append(torchvision_weights(backbone.arch, cache_dir))
    if task.get("dataset") == "cifar10":
        fetches.append(cifar10(cifar_root(cache_dir, task.data.get("root"))))
    if task.get("dataset") in ("fashion_mnist", "fmnist") or task.name.startswith("fmnist"):
        fetches.append(fashion_mnist(cache_dir))
    return fetches


def plan(cfg: DictConfig) -> list[Fetch]:
    """Everything the composed task needs that can be downloaded."""
    cache_dir = Path(cfg.cache_dir)
    task, backbone = cfg.task, cfg.backbone
    fetches: list[Fetch | None] = []
    if task.family == "clip":
        if backbone.get("pretrained") and backbone.get("tag"):
            fetches.append(clip_weights(backbone.arch, backbone.tag, cache_dir))
        fetches.append(clip_dataset(task.dataset, cache_dir))
    elif task.family == "image_classification":
        fetches += image_classification(cfg, cache_dir)
    elif task.family == "nlg":
        fetches += nlg_models(cfg, cache_dir)
    return [f for f in fetches if f is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan, fetch nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_args(argv)
    try:
        cfg = compose(args.overrides)
    except Exception as err:  # Hydra's composition errors: one line, exit code 2
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    fetches = plan(cfg)
    if not fetches:
        print(f"nothing to fetch for task={cfg.task.name} backbone={cfg.backbone.name}")
        return 0
    for f in fetches:
        print(f"{'would fetch' if args.dry_run else 'fetching'} {f.what}\n"
              f"    from {f.source}\n    into {f.target}", flush=True)
        if not args.dry_run:
            f.target.parent.mkdir(parents=True, exist_ok=True)
            print(f"    done: {f.run()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
