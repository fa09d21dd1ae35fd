"""Run-directory safety, shared by every task family, and the config fingerprint that tags
a run's results and progress files (``equiv.train_state``).

The run directory is locked while a run writes it, and a directory holding the result of a
*different* config is refused rather than skipped or overwritten: a run directory is named
after the command-line overrides only, so two configs (e.g. two ``+experiment=`` presets) can
map to the same one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from equiv.errors import RunDirBusyError
from equiv.locks import holding, try_lock

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


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the whole run, failing fast if it is taken.

    Two jobs with the same run directory are either the same job launched twice or two configs
    the directory name cannot tell apart; neither should wait for the other's results, so the
    second one stops at once with ``RunDirBusyError``. The lock is a ``filelock`` (an OS
    lock): it is released when the process dies, so a killed run never leaves a stale lock.
    Writes into ``run_dir`` meanwhile check that it is still this one (``equiv.locks``).
    """
    lock = try_lock(run_dir)
    if lock is None:
        raise RunDirBusyError(f"{run_dir} is in use by another running job (same run "
                              "directory); wait for it to finish or use another output_root")
    with holding(run_dir, lock):
        yield
