"""Image classification family: config checks here (cheap), the protocol in ``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import ConfigError, one_of
from equiv.method_options import LAMBDA_INPUTS, NORMALIZATIONS, SURROGATES, VECTOR_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

DATASETS = ("digits", "fashion_mnist")
BACKBONES = ("small_cnn", "small_resnet")
IMAGE_GROUPS = ("rot90", "rot180", "hflip", "d4", "trivial")
TRANSFORM_MODES = ("per_example", "per_batch")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch, data or models."""
    task, method = cfg.task, cfg.method
    one_of(task.dataset, DATASETS, "task.dataset")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"backbone {cfg.backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES)}")
    one_of(task.transform, IMAGE_GROUPS, "task.transform")
    one_of(task.eval.transform_mode, TRANSFORM_MODES, "task.eval.transform_mode")
    if method.name == "lambda_equitune":
        one_of(method.lambda_input, LAMBDA_INPUTS, "method.lambda_input")
        one_of(method.normalization, NORMALIZATIONS, "method.normalization")
    if method.name == "equizero":
        one_of(method.proxy, VECTOR_PROXIES, "method.proxy")
        one_of(method.surrogate, SURROGATES, "method.surrogate")
    for key in ("train_size", "test_size"):
        size = task.data.get(key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigError(f"task.data.{key}={size!r} must be a positive integer or null")
    if task.dataset == "fashion_mnist":       # last: the other mistakes are cheaper to report
        from equiv.data.fashion_mnist import locate

        locate(task.data.get("root"), cfg.cache_dir)


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from experiments.image_classification.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
