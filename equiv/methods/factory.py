"""Build a method from its config group (``configs/method/*.yaml``): one name, its options."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from equiv.groups import GroupAction
from equiv.method_options import METHOD_NAMES
from equiv.methods.base import Equitune, Symmetrizer, Vanilla
from equiv.methods.equizero import Equizero
from equiv.methods.lambda_equitune import LambdaEquitune, LambdaNet


def build_method(cfg: Mapping[str, Any], backbone: nn.Module, action: GroupAction,
                 input_shape: Sequence[int] | None = None) -> Symmetrizer:
    """Wrap ``backbone`` with the method ``cfg['name']``.

    ``input_shape`` (one example, no batch axis) sizes the λ-network when it scores raw inputs.
    """
    name = cfg["name"]
    chunk = cfg.get("chunk_size")
    if name == "vanilla":
        return Vanilla(backbone, action, chunk)
    if name == "equitune":
        return Equitune(backbone, action, chunk)
    if name == "equizero":
        return Equizero(backbone, action, cfg["proxy"], surrogate=cfg.get("surrogate", "equitune"),
                        tie_tolerance=cfg.get("tie_tolerance", 1e-6),
                        chunk_size=chunk)
    if name == "lambda_equitune":
        source = cfg.get("lambda_input", "features")
        if source == "features":
            in_features = getattr(backbone, "feature_dim", None)
            if in_features is None:
                raise ValueError("lambda_input=features needs a backbone with feature_dim")
        else:
            if input_shape is None:
                raise ValueError("lambda_input=input needs the input shape")
            in_features = math.prod(input_shape)
        net = LambdaNet(in_features, hidden=cfg.get("hidden", 100), dropout=cfg.get("dropout", 0.5))
        return LambdaEquitune(backbone, action, net, normalization=cfg.get("normalization",
                                                                            "softplus"),
                              lambda_input=source, detach_features=cfg.get("detach_features", True),
                              chunk_size=chunk)
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHOD_NAMES)}")
