"""Deep Q-learning family: config checks here (cheap, torch-free), the protocol in
``protocol.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from equiv.config import one_of, validate_method_options
from equiv.errors import ConfigError
from equiv.method_options import SURROGATES, VECTOR_PROXIES

if TYPE_CHECKING:
    from equiv.experiment import Outcome, RunContext

ENVIRONMENTS = ("gridworld", "cartpole", "acrobot")
BACKBONES = {"gridworld": ("qnet_cnn", "qnet_tiny_cnn"), "cartpole": ("qnet_mlp", "qnet_tiny_mlp"),
             "acrobot": ("qnet_mlp", "qnet_tiny_mlp")}
DQN_INTS = ("total_steps", "num_envs", "buffer_size", "batch_size", "train_frequency",
            "gradient_steps", "target_update_period", "eval_every", "eval_episodes")
# ``equiv.rl.DQNConfig``'s fields (a test keeps them equal), known here without importing torch.
DQN_KEYS = frozenset({*DQN_INTS, "gamma", "lr", "learning_starts", "tau", "eps_start", "eps_end",
                      "exploration_fraction", "huber_delta", "max_grad_norm", "double_dqn",
                      "eval_seed", "eval_at_start", "keep_best", "checkpoint_every"})


def _check_dqn(node: DictConfig, path: str) -> None:
    unknown = sorted(set(node.keys()) - DQN_KEYS)
    if unknown:
        raise ConfigError(f"{path} has unknown keys {', '.join(map(str, unknown))}; valid: "
                          f"{', '.join(sorted(DQN_KEYS))}")
    for key in DQN_INTS:           # absent keys take DQNConfig's defaults
        value = node.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}.{key}={value!r} must be an integer >= 1")
    for key in ("lr", "gamma"):
        value = node.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{path}.{key}={value!r} must be a number > 0")


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before loading torch or building environments."""
    task, method = cfg.task, cfg.method
    one_of(task.env, ENVIRONMENTS, "task.env")
    if cfg.backbone.name not in BACKBONES[task.env]:
        raise ConfigError(f"backbone {cfg.backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(BACKBONES[task.env])}")
    _check_dqn(task.pretrain.dqn, "task.pretrain.dqn")
    _check_dqn(task.finetune.dqn, "task.finetune.dqn")
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
