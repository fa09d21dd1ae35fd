"""NLG fairness family: config checks here (cheap, torch-free), the protocol in ``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, validate_method_options
from equiv.data.nlg import TEMPLATES, WORD_SETS
from equiv.errors import ConfigError
from equiv.experiments.nlg.resources import require_hub_model

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

BACKBONES = ("gpt2", "tiny_gpt2")
PRETRAINED_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
SCORERS = ("regard", "vader")
COMBINES = ("prob", "logits")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch, models or scorers."""
    task, group, backbone = cfg.task, cfg.group, cfg.backbone
    if backbone.name not in BACKBONES:
        raise ConfigError(f"backbone {backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES)}")
    if backbone.name == "gpt2":
        one_of(backbone.model, PRETRAINED_MODELS, "backbone.model")
    one_of(task.context, tuple(TEMPLATES), "task.context")
    if "word_set" not in group:
        raise ConfigError(f"group={group.name} does not fit task {task.name}: NLG needs a "
                          f"word_swap_* group")
    one_of(group.word_set, tuple(WORD_SETS), "group.word_set")
    one_of(group.on_multi_token, ("error", "drop"), "group.on_multi_token")
    demographics = task.demographics if task.demographics is not None else group.demographics
    if not demographics or not all(isinstance(d, str) and d.strip() for d in demographics):
        raise ConfigError(f"task.demographics={demographics!r} must be a non-empty list of words")
    one_of(task.scorer, SCORERS, "task.scorer")
    one_of(task.combine, COMBINES, "task.combine")
    if cfg.method.name == "equizero":
        one_of(cfg.method.proxy, SCORERS, "method.proxy")
    else:
        validate_method_options(cfg.method, SCORERS, "NLG")
    # Last: the downloads this run needs are on disk (runs never contact the hub).
    fetch = f"python scripts/prefetch.py task={task.name}"
    if backbone.name == "gpt2" and backbone.pretrained:
        require_hub_model(backbone.model, "GPT-2 weights", cfg.cache_dir, fetch)
    if task.scorer == "regard" or (cfg.method.name == "equizero" and cfg.method.proxy == "regard"):
        require_hub_model(task.regard_model, "regard classifier", cfg.cache_dir, fetch)


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.nlg.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
