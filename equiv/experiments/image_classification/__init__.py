"""Image classification family: config checks here (cheap), the protocol in ``protocol.py``.

Two kinds of backbone: small CNNs the suite pretrains itself on upright images (digits,
Fashion-MNIST), and torchvision's ImageNet CNNs (CIFAR-10), which get a new head instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, validate_canonicalize, validate_image_task
from equiv.errors import ConfigError
from equiv.experiments.image_classification.resources import IMAGENET_BACKBONES, fetch_command
from equiv.method_options import LAMBDA_INPUTS, NORMALIZATIONS, SURROGATES, VECTOR_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

DATASETS = ("digits", "fashion_mnist", "cifar10", "synthetic")
RGB_DATASETS = ("cifar10", "synthetic")
SELF_PRETRAINED = ("small_cnn", "small_resnet")           # pretrained upright by the suite
BACKBONES = SELF_PRETRAINED + IMAGENET_BACKBONES
HEADS = ("replace", "authors")
OPTIMIZERS = ("adam", "sgd")
MIN_INPUT_SIZE = {"resnet18": 1, "alexnet": 63}           # as equiv.backbones.torchvision_cnn


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch, data or models (types and ranges:
    the schemas, ``equiv.schemas``)."""
    task, method, backbone = cfg.task, cfg.method, cfg.backbone
    validate_image_task(cfg, DATASETS, BACKBONES)
    if method.name == "lambda_equitune":
        one_of(method.lambda_input, LAMBDA_INPUTS, "method.lambda_input")
        one_of(method.normalization, NORMALIZATIONS, "method.normalization")
    if method.name == "equizero":
        one_of(method.proxy, VECTOR_PROXIES, "method.proxy")
        one_of(method.surrogate, SURROGATES, "method.surrogate")
    validate_canonicalize(method, "image_classification")
    one_of(task.finetune.get("optimizer", "adam"), OPTIMIZERS, "task.finetune.optimizer")
    one_of(task.get("head", "replace"), HEADS, "task.head")
    if backbone.name in IMAGENET_BACKBONES:
        _validate_imagenet_backbone(cfg)
    elif "pretrain" not in task:
        raise ConfigError(f"backbone {backbone.name} is pretrained by the suite on upright images "
                          f"and task {task.name} has no task.pretrain; valid backbones: "
                          f"{', '.join(IMAGENET_BACKBONES)}")
    check_resources(cfg)                  # last: the other mistakes are cheaper to report


def _validate_imagenet_backbone(cfg: DictConfig) -> None:
    from equiv.experiments.image_classification.resources import TORCHVISION_WEIGHTS

    task, backbone = cfg.task, cfg.backbone
    if task.dataset not in RGB_DATASETS:
        raise ConfigError(f"backbone {backbone.name} needs RGB images; valid task.dataset: "
                          f"{', '.join(RGB_DATASETS)}")
    one_of(backbone.arch, tuple(TORCHVISION_WEIGHTS), "backbone.arch")
    one_of(backbone.weights, (TORCHVISION_WEIGHTS[backbone.arch].tag,), "backbone.weights")
    minimum = MIN_INPUT_SIZE[backbone.arch]
    if backbone.input_size < minimum:
        raise ConfigError(f"backbone.input_size={backbone.input_size} is not valid for "
                          f"{backbone.arch}: an integer >= {minimum}")


def check_resources(cfg: DictConfig) -> None:
    """Data and weights on disk (``MissingResourceError`` naming the fetch command)."""
    task, backbone = cfg.task, cfg.backbone
    if task.dataset == "fashion_mnist":
        from equiv.data.fashion_mnist import locate

        locate(task.data.get("root"), cfg.cache_dir)
    if backbone.name in IMAGENET_BACKBONES and backbone.pretrained:
        from equiv.experiments.image_classification.resources import require_weights

        require_weights(backbone.arch, cfg.cache_dir, fetch_command(cfg))
    if task.dataset == "cifar10":
        from equiv.data.cifar import cifar_root, require_cifar

        require_cifar("cifar10", cifar_root(cfg.cache_dir, task.data.get("root")),
                      fetch_command(cfg))


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.image_classification.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
