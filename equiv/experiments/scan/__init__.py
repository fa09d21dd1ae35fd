"""SCAN family: config checks here (cheap, torch-free), the protocol in ``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, validate_method_options
from equiv.errors import ConfigError
from equiv.method_options import SEQUENCE_COMBINES, SEQUENCE_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

SPLITS = ("simple", "add_jump", "around_right", "length")
BACKBONES = ("seq2seq_rnn", "seq2seq_gru", "seq2seq_lstm", "seq2seq_tiny")
CELLS = ("rnn", "gru", "lstm")
MODEL_SELECTION = ("best_val", "last")


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
    validate_method_options(method, SEQUENCE_PROXIES, "SCAN")
    if method.name == "canonicalize" and method.gradient != "straight_through":
        raise ConfigError(f"method.gradient={method.gradient!r} is not available on SCAN (one "
                          "canonical view is decoded per command); valid: straight_through")

def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.scan.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
