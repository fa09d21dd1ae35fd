"""SCAN family: config checks here (cheap, torch-free), the protocol in ``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from equiv.config import one_of, validate_method_options
from equiv.errors import ConfigError
from equiv.method_options import SEQUENCE_COMBINES, SEQUENCE_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

SPLITS = ("simple", "add_jump", "around_right", "length")
BACKBONES = ("seq2seq_rnn", "seq2seq_gru", "seq2seq_lstm", "seq2seq_tiny")
CELLS = ("rnn", "gru", "lstm")
MODEL_SELECTION = ("best_val", "last")


def _positive_int(value: object, key: str, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(f"{key}={value!r} must be an integer {bound}")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch, data or models."""
    task, method, backbone = cfg.task, cfg.method, cfg.backbone
    one_of(task.split, SPLITS, "task.split")
    if backbone.name not in BACKBONES:
        raise ConfigError(f"backbone {backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES)}")
    one_of(backbone.cell, CELLS, "backbone.cell")
    one_of(task.pretrain.schedule, ("cosine", "constant"), "task.pretrain.schedule")
    one_of(task.combine, SEQUENCE_COMBINES, "task.combine")
    one_of(task.select_model, MODEL_SELECTION, "task.select_model")
    one_of(task.equizero_proxy, SEQUENCE_PROXIES, "task.equizero_proxy")
    for key in ("pretrain.examples", "pretrain.batch_size", "pretrain.eval_every_examples",
                "finetune.batch_size", "finetune.eval_every"):
        _positive_int(OmegaConf.select(task, key), f"task.{key}")
    _positive_int(task.finetune.iterations, "task.finetune.iterations", allow_zero=True)
    _positive_int(task.max_decode_len, "task.max_decode_len")
    _positive_int(task.eval_batch_size, "task.eval_batch_size")
    _positive_int(backbone.hidden, "backbone.hidden")
    if task.data.get("eval_limit") is not None:
        _positive_int(task.data.eval_limit, "task.data.eval_limit")
    fraction = task.data.validation_fraction
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(f"task.data.validation_fraction={fraction!r} must be in (0, 1)")
    validate_method_options(method, SEQUENCE_PROXIES, "SCAN")
    if method.name == "canonicalize" and method.gradient != "straight_through":
        raise ConfigError(f"method.gradient={method.gradient!r} is not available on SCAN (one "
                          "canonical view is decoded per command); valid: straight_through")

def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.scan.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
