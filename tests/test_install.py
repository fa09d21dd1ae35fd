"""A non-editable install works on its own: ``pip install --target`` of the checkout (offline,
with this environment's setuptools) carries the configs as package data, and its ``equiv-run``
runs a tiny job from a directory outside the checkout, also with a config folder of the user's
own (``--config-dir``) holding a task of theirs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

TINY_RUN = ["backbone=tiny_cnn", "task.pretrain.epochs=1", "task.eval.invariance_probe=8",
            "method=equitune", "cpu_threads=1"]
MY_TASK = """\
# @package _global_
defaults:
  - digits_rot90          # the package's task, then my changes
  - _self_

task:
  name: my_digits
  finetune:
    steps: 4
    eval_every: 2
"""


@pytest.mark.slow
def test_a_target_install_runs_from_anywhere_with_a_users_config_dir(tmp_path):
    source = tmp_path / "src"                      # a copy: building leaves build/ behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "cache", "results", "wip", "tests", "__pycache__", "build",
        "*.egg-info", ".ruff_cache"))
    target = tmp_path / "installed"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(target),
                          str(source)], capture_output=True, text=True, timeout=1800)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (target / "equiv" / "configs" / "config.yaml").is_file()
    assert len(list((target / "equiv" / "configs" / "task").glob("*.yaml"))) == len(
        list((ROOT / "equiv" / "configs" / "task").glob("*.yaml")))
    shutil.rmtree(source)                          # the install must not need the tree
    mine = tmp_path / "my_configs"
    (mine / "task").mkdir(parents=True)
    (mine / "task" / "my_digits.yaml").write_text(MY_TASK)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import equiv; print(equiv.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target)
    out = tmp_path / "out"
    for task in (["task.finetune.steps=4", "task.finetune.eval_every=2"],
                 ["--config-dir", str(mine), "task=my_digits"]):
        proc = subprocess.run([str(target / "bin" / "equiv-run"), *task, *TINY_RUN,
                               f"output_root={out}", f"cache_dir={tmp_path / 'cache'}"],
                              cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=1800)                          # guards hangs only
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {p.parts[len(out.parts)]: json.loads(p.read_text()) for p in out.rglob("results.json")}
    assert sorted(runs) == ["digits_rot90", "my_digits"]
    assert runs["my_digits"]["config"]["task"]["finetune"]["steps"] == 4
    assert all(r["status"] == "complete" for r in runs.values())
    assert list(elsewhere.iterdir()) == []         # nothing written where it started
    bad = subprocess.run([str(target / "bin" / "equiv-run"), "task=my_digits"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert bad.returncode == 2 and "unknown task 'my_digits'" in bad.stderr   # without -cd
