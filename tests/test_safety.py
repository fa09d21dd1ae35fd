"""Static safety checks over the project's own source (issue 7): checkpoints are loaded with
``weights_only=True`` and no config string is ever evaluated as code."""

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

SOURCES = sorted(p for d in ("equiv", "scripts") for p in (ROOT / d).rglob("*.py"))
SOURCES.append(ROOT / "run.py")


def calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def name_of(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading_or_evaluation(path):
    for call in calls(path):
        name = name_of(call)
        assert name not in ("eval", "exec", "pickle.load", "pickle.loads"), \
            f"{path}:{call.lineno} calls {name}"
        if name == "torch.load":
            safe = [k for k in call.keywords if k.arg == "weights_only"
                    and isinstance(k.value, ast.Constant) and k.value.value is True]
            assert safe, f"{path}:{call.lineno}: torch.load without weights_only=True"


def test_the_check_sees_the_loads():
    """The scan above would pass vacuously if it missed every call."""
    loads = [c for p in SOURCES for c in calls(p) if name_of(c) == "torch.load"]
    assert len(loads) >= 5
