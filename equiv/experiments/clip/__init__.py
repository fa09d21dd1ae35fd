"""CLIP family: zero-shot and finetuned CLIP under test-time rotations/flips (paper §4, Figs. 4-8,
5/11). Config and resource checks here (torch-free); the protocol in ``protocol.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, phase_steps, validate_image_task, validate_method_options
from equiv.errors import ConfigError
from equiv.experiments.clip.resources import prefetch_command, require_dataset, require_weights
from equiv.method_options import METHOD_PHASES, VECTOR_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

DATASETS = ("cifar100", "imagenet_v2", "cifar10", "synthetic")
TRAIN_SPLITS = ("cifar100", "cifar10", "synthetic")        # ImageNet-V2 is a test set only
BACKBONES = ("clip_rn50", "clip_rn101", "clip_vitb32", "clip_vitb16", "tiny_clip")
OUTPUTS = ("logits", "probs")
LAMBDA_COMBINES = ("weights", "authors")


def validate(cfg: DictConfig) -> None:
    """Everything checkable before torch: options, budgets, then weights and data on disk."""
    task, method = cfg.task, cfg.method
    validate_image_task(cfg, DATASETS, BACKBONES)
    one_of(task.head.output, OUTPUTS, "task.head.output")
    one_of(task.lambda_combine, LAMBDA_COMBINES, "task.lambda_combine")
    scale = task.head.logit_scale                   # a number: the schema checks it is > 0
    if isinstance(scale, str) and scale != "clip":
        raise ConfigError(f"task.head.logit_scale={scale!r} is not valid: 'clip' or a number > 0")
    validate_method_options(method, VECTOR_PROXIES, "CLIP")
    if task.dataset not in TRAIN_SPLITS and (task.finetune.steps > 0 or phase_steps(method) > 0):
        phases = " ".join(f"method.{p}.steps=0" for p in METHOD_PHASES.get(method.name, ()))
        raise ConfigError(f"task.dataset={task.dataset} has no training split: use "
                          f"task.finetune.steps=0{f' (and {phases})' if phases else ''}, or a "
                          f"dataset among {', '.join(TRAIN_SPLITS)}")
    check_resources(cfg)


def check_resources(cfg: DictConfig) -> None:
    """Weights and dataset present under ``cache_dir`` (``MissingResourceError`` otherwise)."""
    task, backbone = cfg.task, cfg.backbone
    cache_dir = Path(cfg.cache_dir)
    fetch = prefetch_command(task.name, backbone.name,
                             task.dataset if task.dataset != "cifar100" else None)
    if backbone.pretrained:
        if not backbone.tag:
            raise ConfigError(f"backbone {backbone.name} has no pretrained weights; use "
                              "backbone.pretrained=false (random init, recorded as such)")
        require_weights(backbone.arch, backbone.tag, cache_dir, fetch)
    require_dataset(task.dataset, cache_dir, fetch)


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.clip.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
