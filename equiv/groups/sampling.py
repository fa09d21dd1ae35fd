"""Random group elements for test-time (and training-time) transformations of a dataset."""

from __future__ import annotations

import torch
from torch import Tensor


def transform_elements(n: int, order: int, mode: str, batch_size: int,
                       gen: torch.Generator) -> Tensor:
    """One random element per example (``per_example``, the default), or one per consecutive
    batch of ``batch_size`` (``per_batch``, as the authors' CLIP code drew them): ``[n]``."""
    if mode == "per_batch":
        per_batch = torch.randint(order, (-(-n // batch_size),), generator=gen)
        return per_batch.repeat_interleave(batch_size)[:n]
    return torch.randint(order, (n,), generator=gen)
