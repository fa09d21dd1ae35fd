"""Uniform experience replay on preallocated tensors, checkpointable for exact resumes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


class Transitions(NamedTuple):
    """A batch of transitions ``(s, a, r, s', terminated)``, row-aligned.

    Only *termination* is kept: a truncated step is stored with ``terminated=False`` and its
    true final observation, so the TD target bootstraps through time limits.
    """

    obs: Tensor            # [B, *obs_shape] float32
    actions: Tensor        # [B] int64
    rewards: Tensor        # [B] float32
    next_obs: Tensor       # [B, *obs_shape] float32
    terminated: Tensor     # [B] bool


class ReplayBuffer:
    """Fixed-capacity circular buffer; the oldest transitions are overwritten first.

    Storage is allocated once (no per-step allocation, no Python lists of arrays), and rows
    ``[0, len)`` are always the filled ones: before the first wraparound the write position
    equals the size, afterwards every row is filled.
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int],
                 device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs_shape = tuple(obs_shape)
        self.device = torch.device(device)
        shape = (capacity, *self.obs_shape)
        self.obs = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.next_obs = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminated = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _fields(self) -> dict[str, Tensor]:
        return {"obs": self.obs, "actions": self.actions, "rewards": self.rewards,
                "next_obs": self.next_obs, "terminated": self.terminated}

    def add_batch(self, obs: ArrayLike, actions: ArrayLike, rewards: ArrayLike,
                  next_obs: ArrayLike, terminated: ArrayLike) -> None:
        """Append ``n`` transitions (one per vector-env row, already filtered by the caller)."""
        values = {"obs": obs, "actions": actions, "rewards": rewards, "next_obs": next_obs,
                  "terminated": terminated}
        n = len(values["actions"])
        if n == 0:
            return
        if n > self.capacity:   # only the newest ``capacity`` rows would survive anyway
            values = {k: v[n - self.capacity:] for k, v in values.items()}
            self.pos = (self.pos + n - self.capacity) % self.capacity
            n = self.capacity
        idx = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        for name, store in self._fields().items():
            value = torch.as_tensor(values[name]).to(device=self.device, dtype=store.dtype)
            if value.shape != (n, *store.shape[1:]):
                raise ValueError(f"{name}: expected shape {(n, *store.shape[1:])}, "
                                 f"got {tuple(value.shape)}")
            store[idx] = value
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> Transitions:
        """``batch_size`` filled rows, uniformly with replacement, drawn from ``generator``."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), generator=generator,
                            device=generator.device).to(self.device)
        return Transitions(self.obs[idx], self.actions[idx], self.rewards[idx],
                           self.next_obs[idx], self.terminated[idx])

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies) of the filled rows and the write position: plain tensors and
        ints, loadable with ``torch.load(..., weights_only=True)``."""
        state: dict[str, Any] = {"capacity": self.capacity, "pos": self.pos, "size": self.size}
        state.update({k: v[: self.size].clone() for k, v in self._fields().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} != {self.capacity}")
        size = int(state["size"])
        for name, store in self._fields().items():
            value = state[name]
            if tuple(value.shape) != (size, *store.shape[1:]):
                raise ValueError(f"checkpoint buffer field {name} has shape "
                                 f"{tuple(value.shape)}, expected {(size, *store.shape[1:])}")
            store.zero_()
            store[:size] = value.to(device=self.device, dtype=store.dtype)
        self.pos, self.size = int(state["pos"]), size
