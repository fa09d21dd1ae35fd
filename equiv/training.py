"""Shared training utilities: seeding, devices, progress bars, batching, the step loop."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from equiv.errors import NonFiniteLossError

T = TypeVar("T")


def with_own_lr(params: list[nn.Parameter], own: list[nn.Parameter],
                lr: float | None) -> list[nn.Parameter] | list[dict[str, Any]]:
    """``params`` and ``own`` for one optimizer: a plain list when ``lr`` is None (the
    optimizer's lr for all) or ``own`` is empty (e.g. frozen), else two parameter groups with
    ``own`` at ``lr`` (e.g. a canonicalizer beside a backbone finetuned at CLIP's 5e-6, where it
    would barely move)."""
    if lr is None or not own:
        return params + own
    return [{"params": params}, {"params": own, "lr": lr}]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for data order and transforms."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterable[T]:
    """A progress bar on a terminal, silence otherwise (logs, CI, sweeps)."""
    return tqdm(iterable, total=total, desc=desc, disable=None, leave=False, dynamic_ncols=True)


class IndexBatches:
    """Endless shuffled minibatch indices; each epoch is a fresh permutation, none is cut short.

    An iterator with a state that can be saved and restored, for exact resumes; it draws from
    ``generator`` only when an epoch starts.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.generator, self.batch_size = generator, batch_size
        self.starts = list(range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size))
        self.n, self.order, self.position = n, torch.empty(0, dtype=torch.long), len(self.starts)

    def __iter__(self) -> IndexBatches:
        return self

    def __next__(self) -> Tensor:
        if self.position >= len(self.starts):
            self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
        start = self.starts[self.position]
        self.position += 1
        return self.order[start:start + self.batch_size]

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"order": self.order.clone(), "position": self.position}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        order, position = state["order"], state["position"]
        assert isinstance(order, Tensor) and isinstance(position, int)
        self.order, self.position = order.clone(), position


def check_finite(loss: Tensor, step: int, stage: str = "") -> None:
    """Stop before a NaN/inf loss reaches the weights (the last checkpoint stays good)."""
    if not math.isfinite(loss.item()):
        where = f" of {stage}" if stage else ""
        raise NonFiniteLossError(f"non-finite loss {loss.item()} at step {step}{where}")


def train_steps(params: Iterable[nn.Parameter], loss_at: Callable[[int], Tensor], steps: int,
                lr: float, weight_decay: float = 0.0, desc: str = "train",
                on_step: Callable[[int], None] | None = None,
                make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
                optimizer: torch.optim.Optimizer | None = None, start: int = 0) -> None:
    """Adam (or ``make_optimizer(params)``, or a given ``optimizer``) for steps ``start + 1``
    to ``steps`` on ``loss_at(step)``; ``on_step(step)`` runs after each update. A resumed run
    passes its restored ``optimizer`` and the step it had reached as ``start``."""
    params = list(params)
    if optimizer is None:
        optimizer = (make_optimizer(params) if make_optimizer is not None
                     else torch.optim.Adam(params, lr=lr, weight_decay=weight_decay))
    for step in progress(range(start + 1, steps + 1), total=steps - start, desc=desc):
        loss = loss_at(step)
        check_finite(loss, step, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)


@torch.no_grad()
def predict(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int,
            device: torch.device) -> Tensor:
    """Model outputs for ``x`` in evaluation batches, gathered on the CPU."""
    return torch.cat([model(part.to(device)).cpu() for part in x.split(batch_size)])


def accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int,
             device: torch.device) -> float:
    return (predict(model, x, batch_size, device).argmax(-1) == y).float().mean().item()


def derived_generator(seed: int, purpose: str) -> torch.Generator:
    """An independent, reproducible random stream per purpose (data order, test transforms...)."""
    import zlib

    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(purpose.encode())) % 2**63)
