"""The canonicalizer's phases before finetuning, shared by the families that run
``method=canonicalize`` (Mondal et al.'s protocol, mirroring λ-equitune's λ phase).

- The *prior phase* (the zero-shot column): the canonicalizer alone learns the prior, "upright
  data is its own canonical view" (cross-entropy of its scores against the identity). No
  backbone pass: it is cheap, and it is what makes an untrained canonicalizer meaningful.
- The *canonicalizer phase*: the backbone frozen (weights, BatchNorm statistics, dropout), the
  canonicalizer trained on the task loss through the wrapper (straight-through or relaxed, as
  ``method.gradient`` says) plus ``prior_weight`` times the prior loss.

Both are deterministic given the run seed, so a resumed run redoes them identically before its
finetuning checkpoint is restored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from equiv.methods import Canonicalize
from equiv.training import derived_generator, train_steps


def canonicalizer_seed(run_seed: int) -> int:
    """The seed the canonicalizer's initial weights are drawn from: derived from the run seed,
    so building it does not move the run's random stream (the other methods' draws stay put)."""
    gen = derived_generator(run_seed, "canonicalizer_init")
    return int(torch.randint(2**31 - 1, (1,), generator=gen))


def train_canonicalizer(model: Canonicalize, upright: Callable[[], Tensor], steps: int,
                        lr: float, desc: str,
                        task_loss: Callable[[], Tensor] | None = None) -> None:
    """``steps`` Adam steps on the canonicalizer's parameters only: the prior loss on the
    upright batches ``upright()`` yields, plus ``task_loss()`` (computed through ``model``)
    when given, the prior then weighted by ``model.prior_weight``."""
    frozen = [(p, p.requires_grad) for p in model.backbone.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)

    def loss_at(_: int) -> Tensor:
        model.train()
        model.backbone.eval()
        prior = model.prior_loss(upright())
        if task_loss is None:
            return prior
        return task_loss() + model.prior_weight * prior

    try:
        train_steps(model.canonicalizer.parameters(), loss_at, steps, lr, desc=desc)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.eval()

