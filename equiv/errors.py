"""Every exception the suite raises on purpose, in a leaf module: it imports nothing from
``equiv``, so that any module can raise them without an import cycle.

``run.py`` reports both kinds in one line: a ``ConfigError`` (bad input, found before any heavy
work) exits with code 2, a ``RunFault`` (a fault while running) with code 1, and in a sweep only
that job stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ConfigError(ValueError):
    """A bad command line or config: reported in one line, exit code 2."""


class MissingResourceError(ConfigError):
    """Pretrained weights or a dataset that are not on this machine (exit code 2).

    The message names the resource, every place it was looked for, and the command that
    fetches it on a connected machine; nothing is ever substituted silently.
    """

    def __init__(self, resource: str, looked_in: Sequence[str | Path], fetch: str) -> None:
        places = ", ".join(str(p) for p in looked_in) or "nowhere"
        super().__init__(f"{resource} not found (looked in: {places}); fetch it with: {fetch}")
        self.resource, self.looked_in, self.fetch = resource, list(looked_in), fetch


class RunFault(RuntimeError):
    """A fault while running (exit code 1); the last good checkpoint is kept."""


class CheckpointError(RunFault):
    """A cached or given checkpoint, or a progress file, cannot be read or does not fit."""


class NonFiniteLossError(RunFault):
    """Training produced a NaN or infinite loss (or weights)."""


class RunDirBusyError(RunFault):
    """Another process is running the same configuration into the same run directory."""


class RunDirGoneError(RunFault):
    """The run directory was removed or replaced (by another process) while the run wrote it."""


class WriteError(RunFault):
    """A file could not be written (a full disk, a read-only file system, no permission); the
    message says what that costs (``consequence``)."""

    def __init__(self, path: str | Path, err: OSError, consequence: str) -> None:
        super().__init__(f"cannot write {path} ({err.strerror or err}); {consequence}")


class IdxFormatError(ValueError):
    """An IDX file that is corrupt, truncated, or not of the expected kind."""


class MultiTokenWordError(ValueError):
    """Group words that the tokenizer does not map to exactly one known token."""
