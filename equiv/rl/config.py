"""DQN's settings, importable without torch: the trainer's config and, as it stands, the schema
of a task's ``task.{pretrain,finetune}.dqn`` nodes (``equiv.schemas``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from equiv.constraints import Count, Fraction, NonNegative, Positive, Range, check_dataclass


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters. Every period and budget counts *env steps* (real transitions,
    summed over the sub-envs), so runs with different ``num_envs`` share a time axis. The
    annotations' ranges are checked on construction and by the config schemas."""

    total_steps: Annotated[int, Count] = 100_000
    num_envs: Annotated[int, Count] = 1
    buffer_size: Annotated[int, Count] = 10_000
    batch_size: Annotated[int, Count] = 128
    gamma: Annotated[float, Fraction] = 0.99
    lr: Annotated[float, Positive] = 2.5e-4
    learning_starts: Annotated[int, NonNegative] = 1_000
    train_frequency: Annotated[int, Count] = 4    # env steps between rounds of gradient steps
    gradient_steps: Annotated[int, Count] = 1     # updates per round
    target_update_period: Annotated[int, Count] = 500     # env steps between target updates
    tau: Annotated[float, Range(0, 1, low_open=True)] = 1.0   # 1: hard copy; < 1: Polyak
    eps_start: Annotated[float, Fraction] = 1.0
    eps_end: Annotated[float, Fraction] = 0.05
    exploration_fraction: Annotated[float, Fraction] = 0.5    # share of total_steps of ε decay
    huber_delta: Annotated[float, Positive] = 1.0             # Huber (smooth L1) threshold
    max_grad_norm: Annotated[float | None, Positive] = 10.0   # null: no clipping
    double_dqn: bool = False
    eval_every: Annotated[int, Count] = 10_000
    eval_episodes: Annotated[int, Count] = 10
    eval_seed: int = 1_000_000          # episodes use seeds eval_seed + j, the same every run
    eval_at_start: bool = True          # evaluate at step 0: the zero-shot return
    keep_best: bool = False             # end with the weights of the best evaluation
    checkpoint_every: Annotated[int | None, Count] = None

    def __post_init__(self) -> None:
        check_dataclass(self)

    def epsilon(self, step: int) -> float:
        """ε after ``step`` env steps: linear from ``eps_start`` to ``eps_end``, then flat."""
        duration = self.exploration_fraction * self.total_steps
        if duration <= 0:
            return self.eps_end
        frac = min(1.0, step / duration)
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def eval_seeds(self) -> list[int]:
        return [self.eval_seed + j for j in range(self.eval_episodes)]

