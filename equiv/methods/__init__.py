"""Symmetrizers of a pretrained backbone: vanilla, equitune, λ-equitune, equizero and
canonicalization."""

from __future__ import annotations

from equiv.methods.base import Equitune, Symmetrizer, Vanilla
from equiv.methods.canonicalize import Canonicalize
from equiv.methods.canonicalizers import (
    GroupConvCanonicalizer,
    ImageViewScorer,
    SteerableCanonicalizer,
    TokenViewScorer,
    VectorViewScorer,
    ViewScorer,
)
from equiv.methods.equizero import PROXIES, Equizero
from equiv.methods.lambda_equitune import LambdaEquitune, LambdaNet, normalize_weights

__all__ = [
    "PROXIES",
    "Canonicalize",
    "Equitune",
    "Equizero",
    "GroupConvCanonicalizer",
    "ImageViewScorer",
    "LambdaEquitune",
    "LambdaNet",
    "SteerableCanonicalizer",
    "Symmetrizer",
    "TokenViewScorer",
    "Vanilla",
    "VectorViewScorer",
    "ViewScorer",
    "normalize_weights",
]
