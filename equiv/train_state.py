"""One training state for every resumable loop (image and SCAN pretraining and finetuning, DQN):
everything the remaining steps depend on, saved atomically and restored exactly.

A loop names its stateful parts (models, optimizers, schedulers, batch samplers, replay buffers:
anything with ``state_dict``/``load_state_dict``; random generators: ``get_state``/
``set_state``), keeps its counters and curves in ``progress`` (plain data: numbers, strings,
lists, dicts, tensors) and ``step``, calls ``resume`` once before its first step and ``save`` at
its checkpoints. The global random states that training consumes (dropout) are saved with it:
torch's CPU state and, when CUDA is in use, every device's.

A progress file is tagged with the fingerprint of the config that wrote it: a run resumes only
from its own config's progress (another config's, or a file of another ``FORMAT``, is started
over with a warning), a corrupted file is a one-line ``CheckpointError`` (``force=true`` starts
over instead), and models whose weights are no longer finite are never written over the last
good checkpoint. Files are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from equiv.errors import CheckpointError, NonFiniteLossError
from equiv.pretraining import save_atomic

PROGRESS_FILE = "progress.pt"
# Layout of a progress file. 2: this module's (step, rng, parts, progress); files written before
# it (layout 1, one dict per family) are started over.
FORMAT = 2


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


@dataclass
class TrainState:
    """The parts, counters and curves a training loop resumes from (module docstring)."""

    parts: dict[str, Stateful | torch.Generator]
    progress: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The live state (not copies): save or copy it before training goes on."""
        parts = {name: part.get_state() if isinstance(part, torch.Generator)
                 else part.state_dict() for name, part in self.parts.items()}
        return {"format": FORMAT, "step": self.step, "rng": rng_states(), "parts": parts,
                "progress": self.progress}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``; ``progress`` is replaced by a copy (callers re-read its
        entries), so that training on never changes ``state``."""
        for name, part in self.parts.items():
            if isinstance(part, torch.Generator):
                part.set_state(state["parts"][name])
            else:
                part.load_state_dict(state["parts"][name])
        set_rng_states(state["rng"])
        self.step, self.progress = int(state["step"]), copy.deepcopy(dict(state["progress"]))

    def save(self, path: Path, config: str) -> None:
        """Write the state atomically, tagged with ``config`` (the fingerprint of what the run
        computes); ``NonFiniteLossError`` instead if a model's weights are NaN or infinite."""
        for name, part in self.parts.items():
            if isinstance(part, nn.Module):
                check_finite_weights(part, name, self.step)
        save_atomic({"config": config, **self.state_dict()}, path)

    def resume(self, path: Path, config: str, force: bool = False) -> bool:
        """Load the progress ``config`` saved at ``path``; False if there is none to resume."""
        saved = read_progress(path, config, force)
        if saved is not None:
            self.load_state_dict(saved)
        return saved is not None


def read_progress(path: Path, config: str, force: bool = False) -> dict[str, Any] | None:
    """The state saved at ``path`` by ``config``, or None (no file, another config's or
    format's, or ``force``). An unreadable file is a ``CheckpointError`` unless ``force``."""
    if force or not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict):
            raise TypeError(f"expected a dict, found {type(saved).__name__}")
    except Exception as err:  # truncated, garbage, a pickle weights_only refuses, ...
        # torch's own messages are long and suggest weights_only=False: the type name is enough
        raise CheckpointError(f"cannot read progress file {path} (corrupted or not a progress "
                              f"file: {type(err).__name__}); delete it or rerun with force=true"
                              ) from err
    if saved.get("config") != config:
        print(f"warning: {path} was written by a different config; starting over (it will be "
              "overwritten)", file=sys.stderr)
        return None
    if saved.get("format") != FORMAT:
        print(f"warning: {path} was written by an older version of equiv (progress format "
              f"{saved.get('format', 1)}, now {FORMAT}); starting over (it will be overwritten)",
              file=sys.stderr)
        return None
    print(f"resuming from {path} (step {saved['step']})", file=sys.stderr)
    return saved


def check_finite_weights(model: nn.Module, name: str, step: int) -> None:
    """Raise ``NonFiniteLossError`` if a floating tensor of ``model``'s state is NaN or
    infinite (before a checkpoint is written, so that the last good one is never replaced)."""
    for key, value in model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteLossError(f"non-finite weights ({name}: {key}) after step {step}; "
                                     "the last good checkpoint is kept")


def rng_states() -> dict[str, Any]:
    """The global random states training consumes (dropout): torch's, and CUDA's when used."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
