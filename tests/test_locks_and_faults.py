"""Real processes sharing a cache or a run directory, and faults injected mid-run.

- Two runs that need the same pretrained backbone at once: one pretrains, the other waits (and
  says so) and reuses it.
- Two sweeps writing the same run directory: the second is refused in one line.
- A cached pretrained model that was truncated: refused in one line (its checksum), never
  loaded; deleting it pretrains it again.
- A full disk at a checkpoint write: exit 1 in one line, no results.json, the previous
  checkpoint intact, and the same command then resumes and completes.
The child processes are held at a known save (tests/pause_at_checkpoint.py), never raced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, TINY

ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
HANG = 1500                 # seconds; only against a hung child
PAUSER = str(ROOT / "tests" / "pause_at_checkpoint.py")
FINETUNE = [*TINY, "task.finetune.steps=60", "task.finetune.eval_every=20",
            "task.finetune.checkpoint_every=20"]


def paths(root: Path) -> list[str]:
    return [f"output_root={root / 'outputs'}", f"cache_dir={root / 'cache'}"]


def start(args: list[str], root: Path, name: str, pause: dict[str, str] | None = None
          ) -> tuple[subprocess.Popen, Path]:
    """``run.py args`` in the background (held at a save when ``pause`` is given); stderr to a
    file (a pipe nobody reads could block the child)."""
    stderr = root / f"{name}.stderr"
    env = {**ENV, **(pause or {})}
    command = [PAUSER] if pause else [str(ROOT / "run.py")]
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, *command, *args, *paths(root)], cwd=root,
                                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    return proc, stderr


def hold_at(root: Path, pattern: str, nth: int, name: str, **extra: str) -> dict[str, str]:
    return {"EQUIV_PAUSE_GLOB": str(root.resolve() / pattern), "EQUIV_PAUSE_AT": str(nth),
            "EQUIV_PAUSE_MARKER": str(root / f"{name}.paused"), **extra}


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert proc.poll() is None or condition(), f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {HANG} s"
        time.sleep(0.05)


def run_py(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, *paths(root)], cwd=root,
                          env=ENV, capture_output=True, text=True, timeout=HANG)


def results(root: Path, method: str) -> dict:
    (path,) = (root / "outputs").glob(f"digits_rot90/{method}/*/seed=0/results.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_two_processes_needing_one_backbone_pretrain_it_once(tmp_path):
    resume = tmp_path / "go"
    first, first_err = start([*TINY, "method=vanilla"], tmp_path, "first", hold_at(
        tmp_path, "cache/pretrained/*/model.pt", 1, "first", EQUIV_RESUME_FILE=str(resume)))
    # The first holds the cache folder's lock, paused just before it saves the model.
    wait_for((tmp_path / "first.paused").exists, first, "pretraining save")
    second, second_err = start([*TINY, "method=equitune"], tmp_path, "second")
    wait_for(lambda: "another job is building it" in second_err.read_text(), second,
             "waiting message from the second job")
    resume.touch()
    assert first.wait(HANG) == 0, first_err.read_text()
    assert second.wait(HANG) == 0, second_err.read_text()
    assert results(tmp_path, "vanilla")["pretrain"]["cached"] is False
    assert results(tmp_path, "equitune")["pretrain"]["cached"] is True


@pytest.mark.slow
def test_a_second_sweep_on_the_same_run_directory_is_refused(tmp_path):
    args = ["-m", *FINETUNE, "method=equitune"]
    first, _ = start(args, tmp_path, "first", hold_at(
        tmp_path, "outputs/*/progress.pt", 2, "first"))
    try:
        wait_for((tmp_path / "first.paused").exists, first, "first checkpoint")
        second = run_py(args, tmp_path)
    finally:
        first.kill()
        first.wait(HANG)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    busy = [line for line in lines if "is in use by another running job" in line]
    assert len(busy) == 1 and busy[0].startswith("error: ") and "Traceback" not in second.stderr
    assert not list((tmp_path / "outputs").rglob("results.json"))
    again = run_py(args, tmp_path)                          # the killed one resumes
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr


@pytest.mark.slow
def test_a_corrupted_cached_model_is_refused_then_rebuilt(tmp_path):
    assert run_py([*TINY, "method=vanilla"], tmp_path).returncode == 0
    (weights,) = (tmp_path / "cache" / "pretrained").glob("*/model.pt")
    meta = json.loads((weights.parent / "meta.json").read_text())
    assert len(meta["sha256"]) == 64
    weights.write_bytes(weights.read_bytes()[:-100])        # truncated
    proc = run_py([*TINY, "method=equitune"], tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is corrupted (sha256" in lines[0] and "delete" in lines[0]
    assert not list((tmp_path / "outputs").glob("digits_rot90/equitune/*/seed=0/results.json"))
    for path in weights.parent.iterdir():
        path.unlink()
    weights.parent.rmdir()
    proc = run_py([*TINY, "method=equitune"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert results(tmp_path, "equitune")["pretrain"]["cached"] is False


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_loses_nothing(tmp_path):
    args = [*FINETUNE, "method=equitune"]
    reference = tmp_path / "reference"
    reference.mkdir()
    assert run_py(args, reference).returncode == 0
    faulty, faulty_err = start(args, tmp_path, "faulty", hold_at(
        tmp_path, "outputs/*/progress.pt", 2, "faulty", EQUIV_RESUME_FILE=str(tmp_path),
        EQUIV_FAIL_ERRNO="ENOSPC"))
    assert faulty.wait(HANG) == 1
    lines = faulty_err.read_text().strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not list((tmp_path / "outputs").rglob("results.json"))
    (progress,) = (tmp_path / "outputs").rglob("progress.pt")
    saved = torch.load(progress, weights_only=False)
    assert saved                                            # the first checkpoint, intact
    again = run_py(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    assert results(tmp_path, "equitune")["metrics"] == results(reference, "equitune")["metrics"]
