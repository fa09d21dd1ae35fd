"""Image classification family: config checks here (cheap), the protocol in ``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import ConfigError

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

DATASETS = ("digits",)
BACKBONES = ("small_cnn",)
IMAGE_GROUPS = ("rot90", "rot180", "hflip", "d4", "trivial")
TRANSFORM_MODES = ("per_example", "per_batch")
LAMBDA_INPUTS = ("input", "features")
NORMALIZATIONS = ("softplus", "softmax")
PROXIES = ("entropy", "neg_max_prob", "neg_max_logit")
SURROGATES = ("equitune", "identity")


def _one_of(value: object, valid: tuple[str, ...], key: str) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid: {', '.join(valid)}")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch, data or models."""
    task, method = cfg.task, cfg.method
    _one_of(task.dataset, DATASETS, "task.dataset")
    if cfg.backbone.name not in BACKBONES:
        raise ConfigError(f"backbone {cfg.backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES)}")
    _one_of(task.transform, IMAGE_GROUPS, "task.transform")
    _one_of(task.eval.transform_mode, TRANSFORM_MODES, "task.eval.transform_mode")
    if method.name == "lambda_equitune":
        _one_of(method.lambda_input, LAMBDA_INPUTS, "method.lambda_input")
        _one_of(method.normalization, NORMALIZATIONS, "method.normalization")
    if method.name == "equizero":
        _one_of(method.proxy, PROXIES, "method.proxy")
        _one_of(method.surrogate, SURROGATES, "method.surrogate")


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from experiments.image_classification.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
