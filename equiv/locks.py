"""File locks and the run directory a process holds, in a leaf module (torch-free, nothing from
``equiv`` but its errors).

Locks are ``filelock`` OS locks: released when their holder dies, so never stale. A held run
directory is remembered by the identity (device, inode) of its lock file: if the directory is
removed or replaced while the run goes on, the next write into it is refused
(``RunDirGoneError``) instead of recreating a directory that is no longer the run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from equiv.errors import RunDirGoneError

LOCK_FILE = ".lock"
_held: dict[Path, tuple[int, int]] = {}           # run directory -> its lock file's identity


def try_lock(folder: Path, wait: bool = False) -> FileLock | None:
    """``folder``'s lock (the folder is created), acquired at once, or None if another process
    holds it; with ``wait``, acquired when that process lets go."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    return lock


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


@contextmanager
def holding(run_dir: Path, lock: FileLock) -> Iterator[None]:
    """Release ``lock`` at the end; meanwhile writes under ``run_dir`` are checked by
    ``check_held``."""
    key = run_dir.resolve()
    _held[key] = _identity(key / LOCK_FILE)
    try:
        yield
    finally:
        _held.pop(key, None)
        lock.release()


def check_held(path: Path) -> None:
    """Before writing ``path``: ``RunDirGoneError`` if it lies in a run directory this process
    holds and that directory was removed or replaced since."""
    for folder in Path(path).resolve().parents:
        if folder in _held:
            try:
                same = _identity(folder / LOCK_FILE) == _held[folder]
            except OSError:
                same = False
            if not same:
                raise RunDirGoneError(f"run directory {folder} was removed or replaced while the "
                                      "run was writing it; the run stopped without writing "
                                      "there again, and the same command runs it anew")
            return
