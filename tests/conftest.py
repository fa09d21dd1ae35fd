"""Test-wide settings: never touch the network; one torch thread; deterministic hypothesis."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Before torch loads: set_num_threads alone leaves MKL's OpenMP team (batched GEMM) in place.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch
from hypothesis import settings

# Tiny models run fastest on one thread, and two OpenMP threads on a busy 2-core machine can be
# 100x slower (spin-waiting): one thread keeps the suite's time predictable.
torch.set_num_threads(1)

settings.register_profile("equiv", max_examples=12, deadline=None, derandomize=True)
settings.load_profile("equiv")


@pytest.fixture
def float64():
    """Exact checks in float64, without leaking the default dtype into other tests."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
