"""Resumable progress files and run-directory safety, shared by every task family.

A progress file is a ``torch.save``d dict, written atomically (the families call
``save_atomic(progress_payload(state, fingerprint), path)``, so that tests can interrupt them
right after a checkpoint) and tagged with the fingerprint of the config that wrote it: a run
resumes only from its own config's progress, a corrupted file is a one-line
``CheckpointError`` (``force=true`` starts over instead), and weights that are no longer finite
are never written over the last good checkpoint.

The run directory is locked while a run writes it, and a directory holding the result of a
*different* config is refused rather than skipped or overwritten: a run directory is named
after the command-line overrides only, so two configs (e.g. two ``+experiment=`` presets) can
map to the same one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from equiv.errors import CheckpointError, NonFiniteLossError, RunDirBusyError

PROGRESS_FILE = "progress.pt"
LOCK_FILE = ".lock"

# Settings that change where or how fast a run goes, or how it is logged, never what it computes.
RUNTIME_KEYS = frozenset({"force", "cpu_threads", "device", "logger", "exp_name", "output_root",
                          "cache_dir", "run_subdir", "hydra"})


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _canonical(value: Any) -> Any:
    """JSON-safe and comparable with a config read back from results.json."""
    from equiv.results import to_jsonable

    return json.loads(json.dumps(to_jsonable(value), sort_keys=True))


def config_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's leaves (``a.b.c`` -> value) that decide what a run computes."""
    plain = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    return _flatten(_canonical(plain))


def fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of what ``config`` computes (runtime-only keys left out)."""
    canonical = json.dumps(config_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two configs. Keys only one side has are not counted: a
    new option added to the code since ``old`` was written does not make it another config."""
    a, b = config_settings(old), config_settings(new)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def check_finite_weights(state: Mapping[str, Any], step: Any) -> None:
    """Raise ``NonFiniteLossError`` if a floating tensor of the state dict is NaN or infinite
    (called before writing a checkpoint, so that the last good one is never replaced)."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            raise NonFiniteLossError(f"non-finite weights ({name}) after step {step}; the last "
                                     "good checkpoint is kept")


def progress_payload(state: Mapping[str, Any], config_fingerprint: str,
                     weights: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """``state`` tagged with the config fingerprint, ready for ``save_atomic``.

    The state dicts under ``weights`` must be finite: a diverged model raises
    ``NonFiniteLossError`` before anything is written, so the last good file stays in place.
    """
    for key in weights:
        check_finite_weights(state.get(key) or {}, state.get("step", "?"))
    return {**state, "config": config_fingerprint}


def load_progress(path: Path, config_fingerprint: str, force: bool = False
                  ) -> dict[str, Any] | None:
    """The progress saved at ``path`` by this config, or None (no file, another config's, or
    ``force``). An unreadable file is a ``CheckpointError`` unless ``force`` starts over."""
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
    if saved.get("config") != config_fingerprint:
        print(f"warning: {path} was written by a different config; starting over (it will be "
              "overwritten)", file=sys.stderr)
        return None
    step = saved.get("step", (saved.get("trainer") or {}).get("step"))
    print(f"resuming from {path}" + ("" if step is None else f" (step {step})"), file=sys.stderr)
    return saved


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the whole run, failing fast if it is taken.

    Two jobs with the same run directory are either the same job launched twice or two configs
    the directory name cannot tell apart; neither should wait for the other's results, so the
    second one stops at once with ``RunDirBusyError``. The lock is an ``flock``: the kernel
    releases it when the process dies, so a killed run never leaves a stale lock behind.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirBusyError(f"{run_dir} is in use by another running job (same run "
                                  "directory); wait for it to finish or use another "
                                  "output_root") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
