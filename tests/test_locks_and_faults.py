"""Real processes sharing a cache or a run directory, and faults injected mid-run.

- Two runs that need the same pretrained backbone at once: one pretrains, the other waits (and
  says so) and reuses it.
- Two sweeps writing the same run directory: the second is refused in one line.
- A cached pretrained model that was truncated: refused in one line (its checksum), never
  loaded; deleting it pretrains it again.
- A full disk, or a read-only run directory, at a checkpoint write: exit 1 in one line, no
  results.json, the previous checkpoint intact, and the same command then resumes and
  completes with the metrics of an uninterrupted run.
- The run directory removed, or replaced by another, while a run writes it: exit 1 in one line
  at its next write, nothing written into the replacement, no results.json, and the same
  command then runs it anew to the same metrics.
- How faults are worded (in-process): a failed write says what is kept, a failed read claims
  nothing about checkpoints.
The child processes are held at a known save (tests/pause_at_checkpoint.py), never raced.
"""

from __future__ import annotations

import errno as errno_codes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from equiv.checkpoints import run_dir_lock
from equiv.cli import describe_fault
from equiv.errors import RunDirGoneError, WriteError
from equiv.pretraining import save_atomic
from equiv.results import write_results
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The metrics of the faulty runs' config, run without a fault."""
    root = tmp_path_factory.mktemp("reference")
    assert run_py([*FINETUNE, "method=equitune"], root).returncode == 0
    return results(root, "equitune")["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize(("errno", "says"), [("ENOSPC", "No space left on device"),
                                             ("EROFS", "Read-only file system")])
def test_a_failing_write_at_a_checkpoint_loses_nothing(errno, says, reference, tmp_path):
    """A full disk, or the run directory made read-only (as root, chmod binds nobody: the
    write fails as the OS would), at the second checkpoint."""
    args = [*FINETUNE, "method=equitune"]
    faulty, faulty_err = start(args, tmp_path, "faulty", hold_at(
        tmp_path, "outputs/*/progress.pt", 2, "faulty", EQUIV_RESUME_FILE=str(tmp_path),
        EQUIV_FAIL_ERRNO=errno))
    assert faulty.wait(HANG) == 1
    lines = faulty_err.read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), lines
    assert f"({says}); completed checkpoints are kept" in lines[0], lines
    assert not list((tmp_path / "outputs").rglob("results.json"))
    (progress,) = (tmp_path / "outputs").rglob("progress.pt")
    saved = torch.load(progress, weights_only=False)
    assert saved["step"] == 20                              # the first checkpoint, intact
    assert not list(progress.parent.glob(".progress.pt.*"))  # no temporary file left
    again = run_py(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    assert results(tmp_path, "equitune")["metrics"] == reference


@pytest.mark.slow
@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_the_run_directory_removed_while_a_run_writes(how, reference, tmp_path):
    """Held just before its second checkpoint, the run's directory is deleted (and, for
    "replaced", another directory put in its place); let go, the run stops at that write with
    one line instead of recreating the directory or writing into the new one. The same command
    then runs it anew to the end."""
    args = [*FINETUNE, "method=equitune"]
    resume = tmp_path / "go"
    faulty, faulty_err = start(args, tmp_path, "faulty", hold_at(
        tmp_path, "outputs/*/progress.pt", 2, "faulty", EQUIV_RESUME_FILE=str(resume)))
    wait_for((tmp_path / "faulty.paused").exists, faulty, "second checkpoint")
    (progress,) = (tmp_path / "outputs").rglob("progress.pt")
    run_dir = progress.parent
    shutil.rmtree(run_dir)
    if how == "replaced":
        run_dir.mkdir()
        (run_dir / "other.txt").write_text("someone else's\n")
    resume.touch()
    assert faulty.wait(HANG) == 1
    lines = faulty_err.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (f"error: run directory {run_dir.resolve()} was removed or replaced while "
                        "the run was writing it; the run stopped without writing there again, "
                        "and the same command runs it anew")
    assert not list((tmp_path / "outputs").rglob("results.json"))
    if how == "removed":
        assert not run_dir.exists()
    else:
        assert [p.name for p in run_dir.iterdir()] == ["other.txt"]
    again = run_py(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert results(tmp_path, "equitune")["metrics"] == reference


# --- in-process: how faults are worded ---------------------------------------------------------

def test_a_failed_read_does_not_claim_anything_about_checkpoints():
    err = OSError(errno_codes.EIO, os.strerror(errno_codes.EIO), "/data/train.idx")
    assert describe_fault(err) == "I/O error (Input/output error): /data/train.idx"


def test_a_failed_checkpoint_write_says_what_is_kept(tmp_path, monkeypatch):
    target = tmp_path / "progress.pt"
    save_atomic({"step": 1}, target)

    def full(*args, **kwargs):
        raise OSError(errno_codes.ENOSPC, os.strerror(errno_codes.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError) as caught:
        save_atomic({"step": 2}, target)
    assert describe_fault(caught.value) == (
        f"cannot write {target} (No space left on device); completed checkpoints are kept, and "
        "the same command resumes from the last one")
    assert [p.name for p in tmp_path.iterdir()] == ["progress.pt"]     # no temporary file
    assert torch.load(target)["step"] == 1


def test_a_failed_results_write_says_the_run_is_not_saved(tmp_path):
    (tmp_path / "results.json").mkdir()                 # cannot be replaced by a file
    with pytest.raises(WriteError, match=r"results.json \(.*\); the run's results are not saved"):
        write_results(tmp_path, {"status": "complete"})


def test_writes_into_a_held_run_directory_check_that_it_is_still_there(tmp_path):
    run_dir = tmp_path / "run"
    with run_dir_lock(run_dir):
        save_atomic({"step": 1}, run_dir / "progress.pt")
        write_results(run_dir, {"status": "complete"})
        shutil.rmtree(run_dir)
        for write in (lambda: save_atomic({}, run_dir / "progress.pt"),
                      lambda: write_results(run_dir, {})):
            with pytest.raises(RunDirGoneError, match="was removed or replaced"):
                write()
        assert not run_dir.exists()
    save_atomic({"step": 2}, run_dir / "progress.pt")  # released: an ordinary directory again
