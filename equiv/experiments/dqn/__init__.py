"""Deep Q-learning family: config checks here (cheap, torch-free), the protocol in
``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, validate_method_options
from equiv.errors import ConfigError
from equiv.instantiate import is_suite_target
from equiv.method_options import SURROGATES, VECTOR_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

ENVIRONMENTS = ("gridworld", "cartpole", "acrobot")
BACKBONES = {"gridworld": ("qnet_cnn", "qnet_tiny_cnn"), "cartpole": ("qnet_mlp", "qnet_tiny_mlp"),
             "acrobot": ("qnet_mlp", "qnet_tiny_mlp")}


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch or building environments."""
    task, method = cfg.task, cfg.method
    one_of(task.env, ENVIRONMENTS, "task.env")
    if is_suite_target(cfg.backbone) and cfg.backbone.name not in BACKBONES[task.env]:
        raise ConfigError(f"backbone {cfg.backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES[task.env])}")
    validate_method_options(method, VECTOR_PROXIES, "DQN",
                            surrogates=(*SURROGATES, "chosen"))
    if method.name == "lambda_equitune":
        steps = method.lambda_phase.steps
        if steps > 0 and not cfg.backbone.pretrained:
            # The phase fits λ to the pretrained agent on its own states: without one there is
            # nothing to fit, and running it would silently mean something else.
            raise ConfigError(f"method.lambda_phase.steps={steps} needs a pretrained Q-network "
                              "(DQN's λ phase fits λ to the pretrained agent), but "
                              "backbone.pretrained=false; set method.lambda_phase.steps=0")


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    from equiv.experiments.dqn.protocol import run as run_protocol

    return run_protocol(cfg, ctx)
