"""DQN's settings, importable without torch: the trainer's config and, as it stands, the schema
of a task's ``task.{pretrain,finetune}.dqn`` nodes (``equiv.schemas``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters. Every period and budget counts *env steps* (real transitions,
    summed over the sub-envs), so runs with different ``num_envs`` share a time axis."""

    total_steps: int = 100_000
    num_envs: int = 1
    buffer_size: int = 10_000
    batch_size: int = 128
    gamma: float = 0.99
    lr: float = 2.5e-4
    learning_starts: int = 1_000
    train_frequency: int = 4            # env steps between rounds of gradient steps
    gradient_steps: int = 1             # updates per round
    target_update_period: int = 500     # env steps between target updates
    tau: float = 1.0                    # 1.0: hard copy; < 1: Polyak averaging at each update
    eps_start: float = 1.0
    eps_end: float = 0.05
    exploration_fraction: float = 0.5   # share of total_steps of the linear ε decay
    huber_delta: float = 1.0            # Huber (smooth L1) threshold
    max_grad_norm: float | None = 10.0
    double_dqn: bool = False
    eval_every: int = 10_000
    eval_episodes: int = 10
    eval_seed: int = 1_000_000          # episodes use seeds eval_seed + j, the same every run
    eval_at_start: bool = True          # evaluate at step 0: the zero-shot return
    keep_best: bool = False             # end with the weights of the best evaluation
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be an integer >= 1")
        checks = {
            "learning_starts": self.learning_starts >= 0,
            "gamma": 0.0 <= self.gamma <= 1.0,
            "lr": self.lr > 0,
            "tau": 0.0 < self.tau <= 1.0,
            "eps_start": 0.0 <= self.eps_start <= 1.0,
            "eps_end": 0.0 <= self.eps_end <= 1.0,
            "exploration_fraction": 0.0 <= self.exploration_fraction <= 1.0,
            "huber_delta": self.huber_delta > 0,
            "max_grad_norm": self.max_grad_norm is None or self.max_grad_norm > 0,
            "checkpoint_every": self.checkpoint_every is None or self.checkpoint_every >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")

    def epsilon(self, step: int) -> float:
        """ε after ``step`` env steps: linear from ``eps_start`` to ``eps_end``, then flat."""
        duration = self.exploration_fraction * self.total_steps
        if duration <= 0:
            return self.eps_end
        frac = min(1.0, step / duration)
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def eval_seeds(self) -> list[int]:
        return [self.eval_seed + j for j in range(self.eval_episodes)]


POSITIVE = ("total_steps", "num_envs", "buffer_size", "batch_size", "train_frequency",
            "gradient_steps", "target_update_period", "eval_every", "eval_episodes")
