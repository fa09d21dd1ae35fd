"""The results.json schema written at the end of every run, and an atomic writer for it.

A run directory counts as finished only when it holds a complete results.json, so sweeps can
skip finished runs and re-run interrupted ones. The file is written once, at the very end, via
write-to-temp + fsync + os.replace, so an interrupted run can never leave a half-written file
that :func:`is_complete` would accept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from equiv.errors import WriteError
from equiv.locks import check_held

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1

# Distribution names (as pip knows them) whose versions are recorded for reproducibility.
_TRACKED_DISTRIBUTIONS = (
    "equiv",
    "torch",
    "torchvision",
    "numpy",
    "hydra-core",
    "omegaconf",
    "wandb",
    "scikit-learn",
    "transformers",
    "open_clip_torch",
    "gymnasium",
)

_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], repo_dir: Path | None) -> str | None:
    """Run a git command, returning stdout or None on any failure (git missing, not a repo...)."""
    cwd = Path(repo_dir) if repo_dir is not None else _PACKAGE_DIR
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout


def git_sha(repo_dir: Path | None = None) -> str | None:
    """Commit of the checkout holding the code (default: the equiv package); None if unknown."""
    out = _git(["rev-parse", "HEAD"], repo_dir)
    if out is None:
        return None
    sha = out.strip()
    return sha or None


def git_dirty(repo_dir: Path | None = None, ignore: tuple[str, ...] = ()) -> bool | None:
    """Whether tracked files have uncommitted changes, so a SHA alone may not reproduce a run;
    ``ignore``: pathspecs whose changes do not count (e.g. the outputs being written)."""
    excluded = ["--", ".", *(f":!{spec}" for spec in ignore)] if ignore else []
    out = _git(["status", "--porcelain", "--untracked-files=no", *excluded], repo_dir)
    if out is None:
        return None
    return bool(out.strip())


def package_versions() -> dict[str, str]:
    """Versions of python and the key dependencies, read from metadata (no slow imports)."""
    versions = {"python": sys.version.split()[0]}
    for dist in _TRACKED_DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions


def to_jsonable(obj: Any) -> Any:
    """Recursively convert to plain JSON types: scalars via ``.item()``, NaN/inf to None."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Sequence | set | frozenset) and not isinstance(obj, bytes | bytearray):
        return [to_jsonable(v) for v in obj]  # also covers OmegaConf ListConfig
    if isinstance(obj, Path):
        return str(obj)
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return to_jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass  # multi-element arrays/tensors: fall through to tolist()
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist())
    return str(obj)


# Environment variables whose values are credentials: never written into a results file.
_SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def _secret_values() -> set[str]:
    """Values of credential-named variables; long, path- and space-free ones only, so that a
    variable such as ``SSH_KEY_DIR=/root`` does not blank every path."""
    return {value for name, value in os.environ.items()
            if len(value) >= 16 and os.sep not in value and not any(c.isspace() for c in value)
            and any(part in name.upper() for part in _SECRET_NAME_PARTS)}


def redact_secrets(obj: Any, secrets: set[str] | None = None) -> Any:
    """``obj`` with every string containing a credential from the environment (e.g. a W&B API
    key passed as a config override by mistake) replaced by ``"<redacted>"``."""
    secrets = _secret_values() if secrets is None else secrets
    if not secrets:
        return obj
    if isinstance(obj, str):
        return "<redacted>" if any(secret in obj for secret in secrets) else obj
    if isinstance(obj, dict):
        return {k: redact_secrets(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_secrets(v, secrets) for v in obj]
    return obj


def _iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def build_results(
    *,
    config: dict,
    metrics: dict,
    curves: dict[str, list[dict]],
    started_at: float,
    wall_time_s: float,
    device: str,
    extra: dict | None = None,
) -> dict:
    """Assemble the results.json payload for a finished run (already JSON-serialisable, no
    credentials from the environment in it)."""
    results = {
        "schema_version": SCHEMA_VERSION,
        "status": "complete",
        "task": config["task"]["name"],
        "method": config["method"]["name"],
        "backbone": config["backbone"]["name"],
        "group": config["group"]["name"],
        "seed": config["seed"],
        "pretrained": config["backbone"].get("pretrained", True),
        "metrics": metrics,
        "curves": curves,
        "config": config,
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "versions": package_versions(),
        "device": device,
        "started_at": _iso_utc(started_at),
        "wall_time_s": wall_time_s,
        **(extra or {}),
    }
    return redact_secrets(to_jsonable(results))


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so readers see either the old file or the complete new one, never a prefix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", delete=False, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    ) as tmp:
        tmp_path = tmp.name
        try:
            json.dump(data, tmp, indent=2, allow_nan=False)
            tmp.write("\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            _remove_quietly(tmp_path)
            raise
    try:
        os.replace(tmp_path, path)
    except BaseException:
        _remove_quietly(tmp_path)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_results(run_dir: Path, results: dict) -> Path:
    """Atomically write ``run_dir/results.json``; call only once the run has fully finished.
    Not into a run directory that was replaced meanwhile (``RunDirGoneError``); an OS failure
    is a ``WriteError``."""
    path = Path(run_dir) / RESULTS_FILE
    check_held(path)
    try:
        write_json_atomic(path, results)
    except OSError as err:
        raise WriteError(path, err, "the run's results are not saved: the same command runs "
                                    "it again") from err
    return path


def read_results(run_dir: Path) -> dict | None:
    """Parsed results.json of a run, or None if it is missing or unreadable."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        with path.open(encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(run_dir: Path) -> bool:
    """True iff the run left a parseable results.json marked complete with metrics."""
    data = read_results(run_dir)
    return (
        data is not None
        and data.get("status") == "complete"
        and isinstance(data.get("metrics"), dict)
    )
