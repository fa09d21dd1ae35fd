"""Interrupt and resume, faults, run-directory safety and secrets, end to end.

Real SIGKILLs of a ``python run.py`` subprocess: SCAN pretraining and SCAN finetuning (one
command, killed twice), digits finetuning and DQN finetuning. Image pretraining is interrupted
in-process right after a checkpoint (an exception from its save; DQN's in-process interrupt is
in tests/test_dqn_experiment.py). Every uninterrupted reference run is in-process (same code,
one CPU thread, deterministic).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from equiv.checkpoints import run_dir_lock
from equiv.errors import CheckpointError, ConfigError, NonFiniteLossError, RunDirBusyError
from equiv.pretraining import save_atomic
from equiv.results import RESULTS_FILE, build_results
from equiv.runner import execute
from equiv.train_state import PROGRESS_FILE
from tests.helpers import ROOT, TINY, compose_config

SECRET = "sk-" + secrets.token_hex(16)        # must never reach a file the project writes
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "WANDB_API_KEY": SECRET}
HANG = 1500          # seconds; only against a hung child (pyproject's per-test timeout is 1800)

SCAN = ["task=scan_add_jump", "backbone=seq2seq_tiny", "method=equizero",
        "task.pretrain.examples=3200", "task.pretrain.batch_size=32",
        "task.pretrain.eval_every_examples=320", "task.data.eval_limit=16",
        "task.finetune.iterations=150", "task.finetune.batch_size=2",
        "task.finetune.eval_every=10", "task.max_decode_len=12"]
DIGITS = [*TINY, "method=equitune", "task.finetune.steps=1500", "task.finetune.eval_every=100",
          "task.finetune.checkpoint_every=20"]


def paths(root: Path) -> list[str]:
    return [f"output_root={root / 'outputs'}", f"cache_dir={root / 'cache'}"]


def run_py(args: list[str], root: Path) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args, *paths(root)], cwd=root,
                          env=ENV, capture_output=True, text=True, timeout=HANG)


def kill_at_checkpoint(args: list[str], root: Path, pattern: str) -> tuple[Path, str]:
    """Run ``run.py`` until it is about to write its second checkpoint matching ``pattern``
    (under ``root``), SIGKILL it there: the first one, complete on disk, and the run's stderr.

    The child waits for the kill (tests/pause_at_checkpoint.py), so where it dies does not
    depend on the machine's speed or load; the only time limit guards against a hang.
    """
    root.mkdir(parents=True, exist_ok=True)
    logs = root.parent / "logs"
    logs.mkdir(exist_ok=True)
    marker, stderr = logs / "paused", logs / "stderr"
    marker.unlink(missing_ok=True)
    env = {**ENV, "EQUIV_PAUSE_GLOB": str(root.resolve() / pattern), "EQUIV_PAUSE_AT": "2",
           "EQUIV_PAUSE_MARKER": str(marker)}
    # Output to files, not pipes: a child that fills a pipe nobody reads would block.
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pause_at_checkpoint.py"),
                                 *args, *paths(root)], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            deadline = time.monotonic() + HANG
            while not marker.exists():
                assert proc.poll() is None, f"the run ended before the kill:\n{stderr.read_text()}"
                assert time.monotonic() < deadline, f"no checkpoint {pattern} after {HANG} s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=HANG) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    (found,) = root.glob(pattern)
    return found, stderr.read_text()


def saved_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def results(root: Path) -> dict:
    (path,) = root.glob(f"outputs/**/{RESULTS_FILE}")
    return json.loads(path.read_text())


def reference(overrides: list[str], root: Path) -> dict:
    cfg = compose_config(*overrides, tmp=root)
    return json.loads(execute(cfg, root / "run").results_path.read_text())


def assert_no_secret(*roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def test_scan_pretraining_and_finetuning_survive_sigkill(tmp_path):
    """Kill during pretraining (progress in the cache), rerun, kill during finetuning (progress
    in the run dir), rerun: the same metrics and curves as an uninterrupted run."""
    ref = reference(SCAN, tmp_path / "ref")
    root = tmp_path / "killed"
    pretrain, _ = kill_at_checkpoint(SCAN, root, f"cache/pretrained/*/{PROGRESS_FILE}")
    pretrain_step = saved_step(pretrain)
    assert 0 < pretrain_step < 100
    finetune, stderr = kill_at_checkpoint(SCAN, root, f"outputs/**/{PROGRESS_FILE}")
    assert f"resuming from {pretrain} (step {pretrain_step})" in stderr
    finetune_step = saved_step(finetune)
    assert 0 < finetune_step < 150
    assert not list(root.glob(f"outputs/**/{RESULTS_FILE}"))       # nothing looks complete
    done = run_py(SCAN, root)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {finetune} (step {finetune_step})" in done.stderr
    res = results(root)
    losses = [[p["value"] for p in r["curves"]["train_loss"]][-3:] for r in (res, ref)]
    print(f"\nSCAN killed at pretraining step {pretrain_step}/100 and finetuning update "
          f"{finetune_step}/150: resumed {res['metrics']}, last train losses {losses[0]}; "
          f"uninterrupted {ref['metrics']}, {losses[1]}")
    assert res["metrics"] == ref["metrics"] and res["curves"] == ref["curves"]
    assert res["pretrain"]["report"] == ref["pretrain"]["report"]
    assert not list(root.glob(f"outputs/**/{PROGRESS_FILE}"))
    assert_no_secret(root)


def test_digits_finetuning_survives_sigkill(tmp_path):
    ref = reference(DIGITS, tmp_path / "ref")
    root = tmp_path / "killed"
    progress, _ = kill_at_checkpoint(DIGITS, root, f"outputs/**/{PROGRESS_FILE}")
    killed_at = saved_step(progress)
    assert 0 < killed_at < 1500
    assert not (progress.parent / RESULTS_FILE).exists()
    done = run_py(DIGITS, root)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {progress} (step {killed_at})" in done.stderr
    res = json.loads((progress.parent / RESULTS_FILE).read_text())
    print(f"\ndigits killed at step {killed_at}/1500: resumed {res['metrics']} vs "
          f"uninterrupted {ref['metrics']}")
    assert res["metrics"] == ref["metrics"] and res["curves"] == ref["curves"]
    assert not progress.exists()
    assert_no_secret(root)


class Interrupt(Exception):
    pass


def dqn_budget(finetune_steps: int, checkpoint_every: int) -> list[str]:
    """A tiny CartPole DQN: a short pretraining, then ``finetune_steps`` env steps."""
    settings = {"pretrain": {"total_steps": 96, "checkpoint_every": 32},
                "finetune": {"total_steps": finetune_steps,
                             "checkpoint_every": checkpoint_every}}
    common = {"learning_starts": 16, "eval_every": 32, "eval_episodes": 2, "batch_size": 8,
              "num_envs": 2}
    return ["task=dqn_cartpole", "backbone=qnet_tiny_mlp", "method=equitune",
            *(f"task.{stage}.dqn.{k}={v}" for stage, own in settings.items()
              for k, v in {**common, **own}.items())]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "train_steps_per_second"}


def test_dqn_run_survives_sigkill(tmp_path):
    """A real kill of a DQN finetuning (replay buffer, target network, vectorised envs and their
    RNG states all restored from progress.pt): the same metrics and curves as without."""
    args = [*dqn_budget(1200, 100), "task.finetune.dqn.eval_every=400"]
    ref = reference(args, tmp_path / "ref")
    root = tmp_path / "killed"
    progress, _ = kill_at_checkpoint(args, root, f"outputs/**/{PROGRESS_FILE}")
    killed_at = saved_step(progress)
    assert 0 < killed_at < 1200
    done = run_py(args, root)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {progress} (step {killed_at})" in done.stderr
    res = results(root)
    print(f"\nDQN killed at env step {killed_at}/1200: resumed "
          f"{without_timing(res['metrics'])} vs uninterrupted {without_timing(ref['metrics'])}")
    assert without_timing(res["metrics"]) == without_timing(ref["metrics"])
    assert res["curves"] == ref["curves"]


def test_image_pretraining_resumes_after_an_interrupt(tmp_path, monkeypatch):
    """Upright pretraining checkpoints in its cache folder (every 10 steps here)."""
    import equiv.experiments.image_classification.protocol as image
    import equiv.train_state as train_state

    args = [*TINY, "method=equitune", "task.pretrain.epochs=3", "task.finetune.steps=0"]
    monkeypatch.setattr(image, "PRETRAIN_CHECKPOINT_EVERY", 10)
    ref = reference(args, tmp_path / "ref")

    def save_then_stop(obj, path):
        save_atomic(obj, path)
        if obj["step"] == 30:
            raise Interrupt
    monkeypatch.setattr(train_state, "save_atomic", save_then_stop)
    with pytest.raises(Interrupt):
        reference(args, tmp_path / "new")
    monkeypatch.setattr(train_state, "save_atomic", save_atomic)
    res = reference(args, tmp_path / "new")
    print(f"\nimage pretraining interrupted at step 30/{ref['pretrain']['report']['steps']}: "
          f"resumed {res['pretrain']['report']} vs uninterrupted {ref['pretrain']['report']}")
    assert res["pretrain"]["report"] == ref["pretrain"]["report"]
    assert res["metrics"] == ref["metrics"]
    weights = [torch.load(r["pretrain"]["checkpoint"], weights_only=True) for r in (ref, res)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not list((tmp_path / "new").rglob(PROGRESS_FILE))


def test_corrupted_progress_is_a_one_line_error_and_force_starts_over(tmp_path):
    args = [*TINY, "method=equitune"]
    cfg = compose_config(*args, tmp=tmp_path)
    run_dir = Path(cfg.output_root) / "run"
    (run_dir / PROGRESS_FILE).parent.mkdir(parents=True)
    (run_dir / PROGRESS_FILE).write_bytes(b"\x00garbage" * 64)
    with pytest.raises(CheckpointError, match="delete it or rerun with force=true"):
        execute(cfg, run_dir)
    # Through run.py, in a sweep: one line naming the file for that job, the other job still
    # runs, exit code 1 at the end, no traceback.
    outputs = tmp_path / "cli" / "outputs"
    (outputs / "s0").mkdir(parents=True)
    (outputs / "s0" / PROGRESS_FILE).write_bytes(b"not a checkpoint")
    proc = run_py(["-m", *args, "seed=0,1", "run_subdir=s${seed}"], tmp_path / "cli")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 2, proc.stderr
    bad = outputs / "s0" / PROGRESS_FILE
    assert errors[0].startswith(f"error: cannot read progress file {bad}")
    assert errors[1] == "error: 1 sweep job(s) failed"
    assert "Traceback" not in proc.stderr
    assert not (outputs / "s0" / RESULTS_FILE).exists() and (outputs / "s1" / RESULTS_FILE).exists()
    cfg.force = True
    assert not execute(cfg, run_dir).skipped and (run_dir / RESULTS_FILE).exists()
    assert not (run_dir / PROGRESS_FILE).exists()


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                          monkeypatch):
    cfg = compose_config(*TINY, "method=equitune", tmp=tmp_path)      # steps 6, checkpoint at 3
    execute(compose_config(*TINY, "method=equitune", "task.finetune.steps=0", tmp=tmp_path),
            tmp_path / "pretrain")                                    # cache the backbone
    calls, cross_entropy = [], F.cross_entropy

    def diverging(*args, **kwargs):
        calls.append(1)
        loss = cross_entropy(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss
    monkeypatch.setattr(F, "cross_entropy", diverging)
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 5 of finetune"):
        execute(cfg, tmp_path / "run")
    monkeypatch.undo()
    state = torch.load(tmp_path / "run" / PROGRESS_FILE, weights_only=True)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["parts"]["model"].values()
               if v.is_floating_point())
    assert not (tmp_path / "run" / RESULTS_FILE).exists()
    # Through run.py: a learning rate that diverges is one line and exit code 1.
    proc = run_py([*TINY, "method=equitune", "task.finetune.lr=1e30"], tmp_path / "cli")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: non-finite loss") and "finetune" in lines[0]
    assert not list((tmp_path / "cli").glob(f"outputs/**/{RESULTS_FILE}"))


def test_run_directory_is_locked_and_other_configs_are_refused(tmp_path, monkeypatch):
    cfg = compose_config(*TINY, "method=equitune", tmp=tmp_path)
    run_dir = tmp_path / "run"
    with run_dir_lock(run_dir), pytest.raises(RunDirBusyError, match="in use by another"):
        execute(cfg, run_dir)
    execute(cfg, run_dir)
    # Runtime-only settings are the same config: skipped.
    same = compose_config(*TINY, "method=equitune", "cpu_threads=1", "device=cpu", "force=false",
                          "exp_name=other", "logger=none", tmp=tmp_path / "elsewhere")
    assert execute(same, run_dir).skipped
    # A different config (as a +experiment= preset would make it) is refused, unless forced.
    other = compose_config(*TINY, "method=equitune", "task.finetune.lr=0.01", tmp=tmp_path)
    with pytest.raises(ConfigError, match=r"different config \(task.finetune.lr differ\)"):
        execute(other, run_dir)
    other.force = True
    assert not execute(other, run_dir).skipped
    assert json.loads((run_dir / RESULTS_FILE).read_text())["config"]["task"]["finetune"][
        "lr"] == 0.01
    # A forced rerun that is interrupted leaves no results.json behind (not even the old one).
    import equiv.experiments.image_classification.protocol as image

    def interrupted(*_):
        raise Interrupt
    monkeypatch.setattr(image, "run", interrupted)
    with pytest.raises(Interrupt):
        execute(other, run_dir)
    assert not (run_dir / RESULTS_FILE).exists()


def test_no_api_key_in_any_written_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    execute(compose_config(*TINY, "method=equitune", tmp=tmp_path), tmp_path / "none")
    # The real wandb, offline (no network). The mode is passed to wandb.init, not through
    # WANDB_MODE: wandb ignores changed environment variables once a test before this one has
    # started a wandb session in the process.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    execute(compose_config(*TINY, "method=equitune", "logger=wandb", "logger.mode=offline",
                           tmp=tmp_path), tmp_path / "wandb")
    assert list((tmp_path / "wandb").rglob("*.wandb")), "wandb wrote no offline run"
    assert_no_secret(tmp_path)
    # Even a key passed in the config by mistake is not written to results.json.
    config = json.loads((tmp_path / "none" / RESULTS_FILE).read_text())["config"]
    res = build_results(config={**config, "exp_name": f"x-{SECRET}"}, metrics={}, curves={},
                        started_at=0.0, wall_time_s=0.0, device="cpu")
    assert SECRET not in json.dumps(res) and res["config"]["exp_name"] == "<redacted>"
    assert res["config"]["cache_dir"] == config["cache_dir"]


def test_a_given_checkpoint_replaces_pretraining(tmp_path):
    """``backbone.checkpoint``: the user's state dict is loaded, nothing is pretrained, and the
    run equals one from the cached pretraining it came from; a file that is not a state dict of
    the backbone is a one-line CheckpointError."""
    args = ["task=scan_add_jump", "backbone=seq2seq_tiny", "method=equizero",
            "task.pretrain.examples=640", "task.pretrain.batch_size=32",
            "task.pretrain.eval_every_examples=320", "task.data.eval_limit=16",
            "task.finetune.iterations=20", "task.finetune.batch_size=2",
            "task.finetune.eval_every=10", "task.max_decode_len=12"]
    ref = reference(args, tmp_path / "ref")
    (weights,) = (tmp_path / "ref").rglob("pretrained/*/model.pt")
    given = compose_config(*args, f"backbone.checkpoint={weights}", tmp=tmp_path / "given")
    res = json.loads(execute(given, tmp_path / "given" / "run").results_path.read_text())
    assert not (tmp_path / "given" / "cache" / "pretrained").exists()
    assert res["pretrain"]["given"] == str(weights)
    assert res["curves"]["test_acc"] == ref["curves"]["test_acc"]
    assert res["metrics"]["test_acc"] == ref["metrics"]["test_acc"]
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    cfg = compose_config(*args, f"backbone.checkpoint={bad}", tmp=tmp_path / "bad")
    with pytest.raises(CheckpointError, match=r"backbone\.checkpoint must be a state dict"):
        execute(cfg, tmp_path / "bad" / "run")
