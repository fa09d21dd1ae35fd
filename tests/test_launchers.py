"""Sweeps through Hydra's parallel launchers, started from outside the checkout: submitit's
local launcher (the Slurm launcher's code path: the task function is pickled and run in a new
process) via ``python /path/to/run.py``, and joblib via the installed ``equiv-run`` script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, TINY

ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
ENV.pop("PYTHONPATH", None)          # the jobs must find equiv as installed, not from the tree
SWEEP = ["-m", "seed=0,1", "method=vanilla", *TINY, "cpu_threads=1"]


def sweep(command: list[str], launcher: list[str], tmp_path: Path) -> list[dict]:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    proc = subprocess.run([*command, *SWEEP, *launcher, f"output_root={tmp_path / 'out'}",
                           f"cache_dir={tmp_path / 'cache'}"], cwd=outside, env=ENV,
                          capture_output=True, text=True, timeout=1800)   # guards hangs only
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = sorted((tmp_path / "out").rglob("results.json"))
    assert [p.parent.name for p in results] == ["seed=0", "seed=1"]
    assert not list(outside.iterdir())                   # nothing written where it started
    return [json.loads(p.read_text()) for p in results]


@pytest.mark.slow
def test_submitit_local_sweep_from_outside_the_checkout(tmp_path):
    runs = sweep([sys.executable, str(ROOT / "run.py")], ["hydra/launcher=submitit_local"],
                 tmp_path)
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "complete" for r in runs)


@pytest.mark.slow
def test_joblib_sweep_with_the_console_script(tmp_path):
    script = Path(sys.executable).parent / "equiv-run"
    runs = sweep([str(script)], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "complete" for r in runs)
