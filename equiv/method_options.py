"""Valid option names of the methods, importable without torch (config validation runs first)."""

from __future__ import annotations

NORMALIZATIONS = ("softplus", "softmax")
LAMBDA_INPUTS = ("input", "features")
SURROGATES = ("equitune", "identity")
# Proxies on one output vector (classifiers, Q-networks) and on decoded sequences.
VECTOR_PROXIES = ("entropy", "neg_max_prob", "neg_max_logit")
SEQUENCE_PROXIES = ("mean_max_prob", "entropy", "mean_max_prob_padded")
# How equitune/λ-equitune combine the views' next-token distributions.
SEQUENCE_COMBINES = ("prob", "logprob")
# Canonicalization: how the canonicalizer's gradient flows, and the families it runs on.
CANONICALIZE_GRADIENTS = ("straight_through", "relaxed")
CANONICALIZE_FAMILIES = ("image_classification", "clip", "scan", "dqn")
# The phases on training data a method runs before finetuning (``method.<phase>.steps``).
METHOD_PHASES = {"lambda_equitune": ("lambda_phase",),
                 "canonicalize": ("prior_phase", "canonicalizer_phase")}
