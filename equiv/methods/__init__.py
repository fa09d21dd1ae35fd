"""Symmetrizers of a pretrained backbone: vanilla, equitune, λ-equitune and equizero."""

from __future__ import annotations

from equiv.methods.base import Equitune, Symmetrizer, Vanilla
from equiv.methods.equizero import PROXIES, Equizero
from equiv.methods.lambda_equitune import LambdaEquitune, LambdaNet, normalize_weights

__all__ = [
    "PROXIES",
    "Equitune",
    "Equizero",
    "LambdaEquitune",
    "LambdaNet",
    "Symmetrizer",
    "Vanilla",
    "normalize_weights",
]
