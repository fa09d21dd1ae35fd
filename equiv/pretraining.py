"""Pretraining stages whose result is cached under ``cache_dir``, keyed by a hash of their config.

Every method and seed of a task reuses the same pretrained backbone, so comparisons are paired
and the (possibly long) pretraining runs once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equiv.errors import CheckpointError, WriteError
from equiv.locks import check_held, try_lock

# Bump when the code of a pretraining stage changes what it produces.
PRETRAIN_CODE_VERSION = 1


def config_hash(config: Mapping[str, Any]) -> str:
    canonical = json.dumps({"code": PRETRAIN_CODE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def backbone_key(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """A backbone config as part of a pretraining cache key: without ``checkpoint`` (a given
    checkpoint bypasses the cache), so adding that option left every cached backbone valid.

    Nor ``_partial_`` (how it is built), nor the ``_target_`` of the suite's own classes, which
    the node's ``name`` identified before configs named their classes: keys cached before
    stay valid. A class from outside the suite is part of the key."""
    from equiv.instantiate import is_suite_target

    dropped = {"checkpoint", "_partial_", *(("_target_",) if is_suite_target(backbone) else ())}
    return {k: v for k, v in backbone.items() if k not in dropped}


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: no half-written checkpoints.
    Not into a run directory that was removed or replaced meanwhile (``RunDirGoneError``); an
    OS failure is a ``WriteError`` (the file there before, if any, is intact)."""
    check_held(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise WriteError(path, err, "completed checkpoints are kept, and the same command "
                                        "resumes from the last one") from err
        raise


def load_state(path: Path, model: nn.Module,
               advice: str = "Delete it (or run with force=true) to rebuild it.") -> None:
    """Load a state dict safely (``weights_only``) with a clear one-line error when it does not
    fit: the cause's first sentence (torch's own messages run to several lines), then ``advice``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:  # corrupted file, wrong architecture, ...
        cause = " ".join(str(err).split())
        cause = cause.split(". ")[0][:200]
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {cause}. "
                              f"{advice}") from err


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``: parallel sweep jobs wait rather than race, and say
    so. A portable ``filelock`` (an OS lock: released when its holder dies, never stale)."""
    lock = try_lock(folder)
    if lock is None:
        print(f"waiting for {folder}: another job is building it", file=sys.stderr, flush=True)
        lock = try_lock(folder, wait=True)
    assert lock is not None
    try:
        yield
    finally:
        lock.release()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_cached_weights(weights: Path, meta: dict[str, Any], meta_path: Path) -> None:
    """A cached model is used only if its bytes are those its pretraining wrote (a truncated or
    corrupted file would otherwise load as garbage, or fail deep inside torch). Models cached
    before checksums were recorded get theirs now."""
    actual = file_sha256(weights)
    expected = meta.get("sha256")
    if expected is None:
        _write_meta({**meta, "sha256": actual}, meta_path)
    elif actual != expected:
        raise CheckpointError(f"cached model {weights} is corrupted (sha256 {actual[:12]} is "
                              f"not the recorded {expected[:12]}); delete {weights.parent} to "
                              "pretrain it again")


def _write_meta(meta: dict[str, Any], meta_path: Path) -> None:
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, meta_path)


def cached_pretrain(cache_dir: Path, kind: str, key: Mapping[str, Any], model: nn.Module,
                    train: Callable[[nn.Module, Path], dict[str, Any]],
                    checkpoint: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """Load ``model``'s pretrained weights from the cache, or run ``train(model, folder)`` and
    cache them; with ``checkpoint`` (the user's own state dict, ``backbone.checkpoint``) load
    that instead and train nothing.

    ``folder`` is the stage's cache folder, where ``train`` may keep resumable progress. Jobs that
    need the same stage at once take turns: the first trains, the others then load. Returns the
    stage's metadata (the key, its hash and what ``train`` reported; for a given checkpoint its
    path and an empty report) and the checkpoint path.
    """
    if checkpoint is not None:
        path = Path(checkpoint)
        load_state(path, model, "backbone.checkpoint must be a state dict of this backbone, "
                                "saved with torch.save(model.state_dict(), path).")
        return {"kind": kind, "given": str(path), "report": {}, "cached": False}, path
    digest = config_hash(key)
    folder = cache_dir / "pretrained" / f"{kind}-{digest}"
    weights, meta_path = folder / "model.pt", folder / "meta.json"
    with exclusive(folder):
        if weights.exists() and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            check_cached_weights(weights, meta, meta_path)
            load_state(weights, model)
            return {**meta, "cached": True}, weights
        started = time.monotonic()
        report = train(model, folder)
        # Wall time of this call (a resumed stage counts only its last part): the cost reports.
        meta = {"kind": kind, "hash": digest, "key": dict(key), "report": report,
                "train_seconds": round(time.monotonic() - started, 3)}
        save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
        meta["sha256"] = file_sha256(weights)
        _write_meta(meta, meta_path)
    return {**meta, "cached": False}, weights
