"""Deep Q-learning around arbitrary (possibly symmetrized) Q-networks: DQN, replay, evaluation.

``DQNConfig`` (``equiv.rl.config``) imports without torch, so config validation can use it; the
trainer's names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from equiv.rl.config import DQNConfig

_LAZY = {"collect_transitions": "dqn", "evaluate": "dqn", "td_loss": "dqn", "train_dqn": "dqn",
         "ReplayBuffer": "replay", "Transitions": "replay"}

__all__ = ["DQNConfig", "ReplayBuffer", "Transitions", "collect_transitions", "evaluate",
           "td_loss", "train_dqn"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"equiv.rl.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
