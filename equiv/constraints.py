"""What a config value must satisfy beyond its type, declared on the field:
``Annotated[float, Positive]``, ``Annotated[int, AtLeast(1)]``, ``Annotated[str, WritableDir()]``.

``equiv.schemas.check_value`` applies them to every config node (and every float, constrained
or not, must be finite); ``DQNConfig`` applies them to itself. A leaf module: it imports
nothing from ``equiv``, so the torch-free config modules can all use it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` on an open side); ``None``: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True                             # a string of a ``str | float`` field
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def words(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def AtLeast(minimum: int) -> Range:
    return Range(minimum)


Positive = Range(0, low_open=True)                  # rates, scales, norms
NonNegative = Range(0)                              # tolerances, weight decay, "0 = off" counts
Fraction = Range(0, 1)                              # probabilities, shares, momentum, γ, ε
OpenFraction = Range(0, 1, low_open=True, high_open=True)     # a split that leaves both sides
DropRate = Range(0, 1, high_open=True)              # dropout: 1 would drop everything
Count = AtLeast(1)                                  # sizes, budgets that must run, periods


@dataclass(frozen=True)
class WritableDir:
    """A directory the run creates (if needed) and writes into."""

    def problem(self, value: str) -> str | None:
        path = Path(value)
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            return f"{existing} is not a directory"
        try:          # a real probe: root passes os.access everywhere, a read-only mount fails
            os.rmdir(tempfile.mkdtemp(prefix=".equiv-probe-", dir=existing))
        except OSError as err:
            return f"cannot create a directory in {existing}: {err.strerror}"
        return None

    def words(self) -> str:
        return "a directory that can be created and written"


@dataclass(frozen=True)
class ReadableFile:
    """A file the run reads (``~`` expanded, as the reader does)."""

    what: str = "a readable file"

    def problem(self, value: str) -> str | None:
        file = Path(value).expanduser()
        if not file.exists():
            return "it does not exist"
        if not file.is_file() or not os.access(file, os.R_OK):
            return "it is not a readable file"
        return None

    def words(self) -> str:
        return self.what


PathRule = WritableDir | ReadableFile


def violation(value: Any, integer: bool, rules: typing.Iterable[object]) -> str | None:
    """What a valid value would be, if ``value`` is not one; ``None`` if it is. Every float must
    be finite; ``integer``: the field is an ``int`` (for the wording)."""
    rules = list(rules)
    ranges = [r for r in rules if isinstance(r, Range)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        finite = not isinstance(value, float) or math.isfinite(value)
        if finite and all(r.admits(value) for r in ranges):
            return None
        kind = "an integer" if integer else "a finite number"
        return " ".join([kind, *(r.words() for r in ranges)])
    if isinstance(value, str):
        for rule in rules:
            if isinstance(rule, PathRule) and (problem := rule.problem(value)):
                return f"{rule.words()} ({problem})"
    return None


def check_dataclass(obj: Any) -> None:
    """``ValueError`` naming the first field of ``obj`` whose value its annotation refuses."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if typing.get_origin(tp) is not Annotated:
            continue
        base, *rules = typing.get_args(tp)
        value = getattr(obj, f.name)
        if (what := violation(value, int in (base, *typing.get_args(base)), rules)):
            raise ValueError(f"{f.name}={value!r} is not valid: {what}")
