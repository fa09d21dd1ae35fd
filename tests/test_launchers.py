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


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"]],
                         ids=["basic", "joblib", "submitit_local"])
def test_a_failed_job_fails_the_sweep(launcher, tmp_path):
    """One job of two meets a runtime fault (an unloadable checkpoint): the other completes,
    and the sweep, whichever launcher ran its jobs and where, ends with one line naming the
    failed job's run directory and exit code 1. (This tree's equiv, also from a worktree.)"""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", *TINY, "method=vanilla", "cpu_threads=1",
         f"backbone.checkpoint=null,{bad}", *launcher, f"output_root={out}",
         f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, env={**ENV, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=1800)                                                    # guards hangs only
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[1] == "error: 1 sweep job(s) failed", errors
    run_dir, message = errors[0].removeprefix("error: ").split(": ", 1)
    assert message.startswith(f"cannot load checkpoint {bad}")
    assert Path(run_dir).is_dir() and Path(run_dir).is_relative_to(out)
    assert not (Path(run_dir) / "results.json").exists()
    (good,) = out.rglob("results.json")                      # the other job's
    assert json.loads(good.read_text())["status"] == "complete"
    assert not (out / ".sweep-faults").exists()
    assert "Traceback" not in proc.stderr
