"""Test-wide settings: never touch the network, deterministic float64 where exactness matters."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hypothesis import settings

settings.register_profile("equiv", max_examples=12, deadline=None, derandomize=True)
settings.load_profile("equiv")
