"""Compose configs exactly as ``run.py`` does, without a subprocess."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from equiv.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "equiv" / "configs"

# Budgets small enough for seconds on a 2-core CPU.
TINY = [
    "backbone=tiny_cnn",
    "task.pretrain.epochs=2",
    "task.finetune.steps=6",
    "task.finetune.eval_every=3",
    "task.eval.invariance_probe=16",
    "++method.lambda_phase.steps=4",
]
# Canonicalization's phases at the same budget (its keys exist only under method=canonicalize).
TINY_CANONICALIZE = ["method.prior_phase.steps=4", "method.canonicalizer_phase.steps=4"]


# Every method and option combination the image property tests cover (tiny λ-network, no
# dropout, so that exactness is tested, not noise).
IMAGE_METHOD_CONFIGS = {
    "equitune": {"name": "equitune"},
    "lambda-softplus-features": {"name": "lambda_equitune", "normalization": "softplus",
                                 "lambda_input": "features", "hidden": 8, "dropout": 0.0},
    "lambda-softmax-input": {"name": "lambda_equitune", "normalization": "softmax",
                             "lambda_input": "input", "hidden": 8, "dropout": 0.0},
    "equizero-neg_max_prob": {"name": "equizero", "proxy": "neg_max_prob"},
    "equizero-entropy-identity": {"name": "equizero", "proxy": "entropy", "surrogate": "identity"},
}

def compose_config(*overrides: str, tmp: Path | None = None) -> DictConfig:
    """The composed config for ``overrides``; outputs and cache under ``tmp`` when given."""
    register_resolvers()
    extra = ["run_subdir=test"]
    if tmp is not None:
        extra += [f"output_root={tmp / 'outputs'}", f"cache_dir={tmp / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, *extra])


def method_from_config(options: dict, backbone, action, input_shape=None):
    """The method ``options["name"]`` built as its ``equiv/configs/method`` yaml builds it, with
    ``options`` overriding the yaml's keys."""
    from equiv.instantiate import build

    node = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "method" / f"{options['name']}.yaml"),
                           options)
    return build(node, "method", backbone=backbone, action=action,
                 optional={"input_shape": input_shape})


def talkative_seq2seq(model, action):
    """An untrained seq2seq model stops at once (EOS): make it talk, in tokens the group moves,
    so that equivariance tests of decoding compare real outputs."""
    import torch

    table = action.rep_out.table
    with torch.no_grad():
        model.out.bias[:3] = torch.tensor([-20.0, -20.0, -1.0])
        model.out.bias[table[1] != table[0]] += 3.0
        model.out.weight.mul_(4.0)
    return model


class DenseImageModel(torch.nn.Module):
    """Not equivariant: a convolution plus a learned per-pixel bias, ``[B, channels, side,
    side] -> [B, 3, side, side]`` (the dense backbone of the equivariance tests)."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 3, 3, padding=1)
        self.bias = torch.nn.Parameter(torch.randn(3, side, side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x) + self.bias)
