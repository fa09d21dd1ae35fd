"""``run.py`` end to end: bad input, a real tiny run, results.json content, skip and force."""

import json
import os
import resource
import subprocess
import sys

import pytest

from equiv.results import is_complete
from equiv.runner import execute
from tests.helpers import ROOT, TINY, TINY_CANONICALIZE, compose_config

ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run_py(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=1800)   # guards hangs only


def run_py_cpu(*args, cwd) -> tuple[subprocess.CompletedProcess, float]:
    """``run_py`` and the CPU seconds (user + system) the child used: a cost bound that a busy
    machine does not stretch, unlike wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run_py(*args, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize(("args", "fragment"), [
    (["task=digits_rot90", "group=nonsense"],
     "unknown group 'nonsense'; valid group options: acrobot_reflect, cartpole_reflect, d4, "
     "grid_rot90, hflip, rot180, rot45, rot90, scan_"),
    (["task.finetune.steps=-1"], "task.finetune.steps=-1 is not valid: an integer >= 0"),
    (["method=equizero", "method.proxy=accuracy"], "method.proxy='accuracy' is not valid"),
    (["task=dqn_cartpole", "task.finetune.lr=3"],
     "Could not override 'task.finetune.lr'. To append to your config use +task.finetune.lr=3 "
     "(Key 'lr' is not in struct)"),
    (["-m", "seed=0,1", "task.eval.no_such_key=1"], "Could not override 'task.eval.no_such_key'"),
    (["task=nope"], "unknown task 'nope'; valid task options: clip_flip"),
    (["method=nope"],
     "unknown method 'nope'; valid method options: canonicalize, equitune, equizero"),
    (["backbone=nope"], "unknown backbone 'nope'; valid backbone options: clip_rn101"),
    (["logger=nope"], "unknown logger 'nope'; valid logger options: none, wandb"),
    (["task=scan_add_jump", "group=rot90"], "group=rot90 does not fit task scan_add_jump"),
    (["task=fmnist_rot45", "group=d4"],
     "group=d4 does not fit task fmnist_rot45; valid groups: rot45, rot90, rot180, trivial"),
    (["task=fmnist_rot90", "group=rot45"], "group=rot45 does not fit task fmnist_rot90"),
    (["task=dqn_cartpole", "group=grid_rot90"], "group=grid_rot90 does not fit task dqn_cartpole"),
    (["task=nlg_race_respect", "group=word_swap_gender"],
     "group=word_swap_gender does not fit task nlg_race_respect"),
    (["task=scan_add_jump", "backbone=small_cnn"],
     "backbone 'small_cnn' does not fit task scan_add_jump"),
    (["task.pretrain.epochs=0"], "task.pretrain.epochs=0 is not valid: an integer >= 1"),
    (["task.finetune.batch_size=0"],
     "task.finetune.batch_size=0 is not valid: an integer >= 1"),
    (["task.pretrain.lr=-0.1"], "task.pretrain.lr=-0.1 is not valid: a finite number > 0"),
    (["task.finetune.lr=abc"], "task.finetune.lr='abc' must be a number"),
    (["task=scan_around_right", "task.finetune.iterations=-5"],
     "task.finetune.iterations=-5 is not valid: an integer >= 0"),
    (["seed=abc"], "seed='abc' must be an integer"),
    (["cpu_threads=0"], "cpu_threads=0 is not valid: an integer >= 1"),
    (["device=tpu"], "device='tpu' is not valid; valid: auto, cpu, cuda, mps"),
    (["task.eval.transform_mode=sometimes"], "task.eval.transform_mode='sometimes' is not valid"),
    (["method=lambda_equitune", "method.normalization=relu"],
     "method.normalization='relu' is not valid; valid: softplus, softmax"),
    (["task=dqn_gridworld", "method=equizero", "method.surrogate=bogus"],
     "method.surrogate='bogus' is not valid"),
    (["task=dqn_cartpole", "method=lambda_equitune", "backbone.pretrained=false"],
     "method.lambda_phase.steps=200 needs a pretrained Q-network"),
    (["task=scan_add_jump", "task.combine=max"], "task.combine='max' is not valid"),
    (["task=clip_rot90", "task.dataset=mnist"], "task.dataset='mnist' is not valid"),
    (["task=nlg_race_respect", "method=canonicalize"],
     "method=canonicalize does not run on NLG tasks; it runs on the image_classification, clip, "
     "scan, dqn tasks (digits_rot90, fmnist_rot90, fmnist_rot45, cnn_cifar10_rot90, clip_*, "
     "scan_*, dqn_*)"),
    (["task=fmnist_rot90", "task.data.root=/nonexistent/fmnist"],
     "not found (looked in: /nonexistent/fmnist); fetch it with: python scripts/prefetch.py"),
    (["task=clip_rot90"], "open_clip weights RN50/openai not found"),
    (["task=cnn_cifar10_rot90"], "torchvision ImageNet weights ResNet18_Weights.IMAGENET1K_V1"),
    (["task=nlg_race_respect"], "GPT-2 weights 'gpt2' not found"),
    (["task=scan_add_jump", "backbone.checkpoint=/nonexistent/model.pt"],
     "backbone.checkpoint='/nonexistent/model.pt' is not valid: a state-dict file saved with "
     "torch.save(model.state_dict(), path) (it does not exist)"),
    (["backbone.checkpoint=/"], "backbone.checkpoint='/' is not valid: a state-dict file saved "
                                "with torch.save(model.state_dict(), path) (it is not a readable"),
    (["+task.finetune.lrr=1"], "task.finetune has unknown keys lrr (task.finetune.lrr); valid:"),
    (["task=scan_add_jump", "backbone.hidden=big"], "backbone.hidden='big' must be an integer"),
    (["+sed=1"], "unknown top-level keys sed; valid: backbone, cache_dir"),
    (["force=maybe"], "force='maybe' must be true or false"),
    # numbers: finite and in range (equiv.constraints), every family's nodes
    (["task.finetune.lr=nan"], "task.finetune.lr=nan is not valid: a finite number > 0"),
    (["task.finetune.lr=inf"], "task.finetune.lr=inf is not valid: a finite number > 0"),
    (["task.finetune.lr=0"], "task.finetune.lr=0 is not valid: a finite number > 0"),
    (["task.pretrain.weight_decay=-inf"],
     "task.pretrain.weight_decay=-inf is not valid: a finite number >= 0"),
    (["task.eval.invariance_probe=-5"],
     "task.eval.invariance_probe=-5 is not valid: an integer >= 1"),
    (["method=equizero", "method.tie_tolerance=-1e-3"],
     "method.tie_tolerance=-0.001 is not valid: a finite number >= 0"),
    (["method=lambda_equitune", "method.dropout=1.5"],
     "method.dropout=1.5 is not valid: a finite number in [0, 1)"),
    (["method=vanilla", "method.chunk_size=0"],
     "method.chunk_size=0 is not valid: an integer >= 1"),
    (["backbone.channels=[16,0]"], "backbone.channels[1]=0 is not valid: an integer >= 1"),
    (["task.data.test_fraction=1.0"],
     "task.data.test_fraction=1.0 is not valid: a finite number in (0, 1)"),
    (["task=scan_add_jump", "task.pretrain.teacher_forcing=1.5"],
     "task.pretrain.teacher_forcing=1.5 is not valid: a finite number in [0, 1]"),
    (["task=scan_add_jump", "task.finetune.clip_norm=0"],
     "task.finetune.clip_norm=0 is not valid: a finite number > 0"),
    (["task=dqn_cartpole", "task.finetune.dqn.gamma=nan"],
     "task.finetune.dqn.gamma=nan is not valid: a finite number in [0, 1]"),
    (["task=dqn_cartpole", "task.pretrain.dqn.eval_episodes=-1"],
     "task.pretrain.dqn.eval_episodes=-1 is not valid: an integer >= 1"),
    (["task=dqn_cartpole", "task.finetune.dqn.exploration_fraction=2"],
     "task.finetune.dqn.exploration_fraction=2 is not valid: a finite number in [0, 1]"),
    (["task=clip_rot90", "task.head.logit_scale=-inf"],
     "task.head.logit_scale=-inf is not valid: a finite number > 0"),
    (["task=clip_rot90", "method=lambda_equitune", "method.lambda_phase.momentum=1.5"],
     "method.lambda_phase.momentum=1.5 is not valid: a finite number in [0, 1]"),
    (["task=nlg_race_respect", "task.top_k=0"], "task.top_k=0 is not valid: an integer >= 1"),
    # paths: what the run does with them, before any work ({tmp}/afile is a regular file)
    (["output_root={tmp}/afile/outputs"], "output_root='{tmp}/afile/outputs' is not valid: a "
                                          "directory that can be created and written "
                                          "({tmp}/afile is not a directory)"),
    (["cache_dir={tmp}/afile/cache"], "cache_dir='{tmp}/afile/cache' is not valid: a directory "
                                      "that can be created and written ({tmp}/afile is not a "
                                      "directory)"),
    (["output_root=/proc/equiv-test/outputs"],
     "output_root='/proc/equiv-test/outputs' is not valid: a directory that can be created and "
     "written (cannot create a directory in /proc: No such file or directory)"),
    (["cache_dir=/sys/equiv-test"], "cache_dir='/sys/equiv-test' is not valid: a directory "
                                   "that can be created and written (cannot create a directory "
                                   "in /sys: Operation not permitted)"),
    (["cache_dir=/dev/null/cache"], "cache_dir='/dev/null/cache' is not valid: a directory that "
                                    "can be created and written (/dev/null is not a directory)"),
    # Hydra's own command-line errors
    (["seed=0,1"], "seed=0,1 is a sweep: add -m to run each value, or write seed=[...]"),
    (["task=digits_rot90,fmnist_rot90"], "task=digits_rot90,fmnist_rot90 is a sweep: add -m"),
    (["seed=[1"], "cannot parse the command line: no viable alternative at input '[1'"),
    (["--bogus-flag"], "unknown option --bogus-flag; valid: "),
    (["--config-dir", "{tmp}/none"], "--config-dir {tmp}/none is not valid: a directory of "
                                     "configs"),
    (["-m", "seed=0", "hydra/launcher=nope"],
     "Could not find 'hydra/launcher/nope'; Available options in 'hydra/launcher': basic"),
    (["hydra.job.chdir=maybe"], "Value 'maybe' is not a valid bool"),
])
def test_bad_input_exits_2_with_one_line(args, fragment, tmp_path):
    """The catalogue: each row a command line (``{tmp}``: the test's directory) and a fragment
    of the one line it must print."""
    (tmp_path / "afile").write_text("")                  # rows put paths under a regular file
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    fragment = fragment.replace("{tmp}", str(tmp_path))
    given = {a.split("=", 1)[0] for a in args}
    paths = {"output_root": str(tmp_path), "cache_dir": str(tmp_path / "cache")}
    proc, cpu = run_py_cpu(*args, *(f"{k}={v}" for k, v in paths.items() if k not in given),
                           cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    # No heavy work before the refusal: the child's CPU time, not wall time (on a loaded machine
    # wall time is mostly waiting). A refusal costs ~0.4 s of CPU here, importing torch ~3 s.
    assert cpu < 5.0, cpu
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]    # no run directory left behind


@pytest.mark.slow
def test_run_py_writes_results_then_skips(tmp_path):
    args = [*TINY, "method=equitune", f"output_root={tmp_path / 'out'}",
            f"cache_dir={tmp_path / 'cache'}"]
    first = run_py(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "out" / "digits_rot90" / "equitune"
    (results_file,) = run_dir.rglob("results.json")
    assert "seed=0" in str(results_file) and "backbone=tiny_cnn" in str(results_file)
    assert "rot90 test accuracy, zero-shot" in first.stdout and str(results_file) in first.stdout
    second = run_py(*args, cwd=tmp_path)
    assert second.returncode == 0 and second.stdout.startswith("skip: ")
    assert json.loads(results_file.read_text())["status"] == "complete"


@pytest.mark.parametrize("method", ["vanilla", "equitune", "lambda_equitune", "equizero",
                                    "canonicalize"])
def test_results_json_content(method, tmp_path):
    cfg = compose_config(*TINY, f"method={method}", "seed=3",
                         *(TINY_CANONICALIZE if method == "canonicalize" else []), tmp=tmp_path)
    run_dir = tmp_path / "run"
    report = execute(cfg, run_dir)
    assert not report.skipped and is_complete(run_dir)
    res = json.loads(report.results_path.read_text())
    assert (res["task"], res["method"], res["backbone"], res["group"], res["seed"]) == (
        "digits_rot90", method, "small_cnn", "rot90", 3)
    assert res["pretrained"] is True and res["config"]["method"]["name"] == method
    assert res["versions"]["torch"] and res["wall_time_s"] > 0 and res["device"] == "cpu"
    m = res["metrics"]
    for key in ("upright_accuracy", "zeroshot_accuracy", "finetuned_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    steps = [p["step"] for p in res["curves"]["test_accuracy"]]
    offset = 4 if method in ("lambda_equitune", "canonicalize") else 0
    assert steps == [offset, offset + 3, offset + 6]
    assert res["curves"]["test_accuracy"][-1]["value"] == m["finetuned_accuracy"]
    if method == "vanilla":
        assert m["zeroshot_invariance_error"] > 1e-3          # the backbone is not invariant
    else:
        assert m["zeroshot_invariance_error"] < 1e-4
        assert m["finetuned_invariance_error"] < 1e-4
    if method == "lambda_equitune":
        assert 0.0 <= m["lambda_phase_accuracy"] <= 1.0
    phase = {"lambda_equitune": "λ", "canonicalize": "canonicalizer"}.get(method)
    after = [label.strip() for label, _ in report.summary if "phase" in label]
    assert after == ([f"after the {phase} phase (4 steps, backbone frozen)"] if phase else [])
    assert execute(cfg, run_dir).skipped
    cfg.force = True
    rerun = execute(cfg, run_dir)
    assert not rerun.skipped
    assert json.loads(rerun.results_path.read_text())["metrics"] == m


def test_pretrained_backbone_is_cached_per_seed_and_shared_by_methods(tmp_path):
    """One pretrained model per seed (``task.pretrain.seed`` follows ``seed``), reused by every
    method of that seed; an integer ``task.pretrain.seed`` shares one model across seeds."""
    runs = {name: execute(compose_config(*TINY, *overrides, tmp=tmp_path), tmp_path / name)
            for name, overrides in [("a", ["method=vanilla"]), ("b", ["method=equitune"]),
                                    ("c", ["method=equitune", "seed=1"]),
                                    ("d", ["method=vanilla", "seed=1", "task.pretrain.seed=0"])]}
    res = {name: json.loads(r.results_path.read_text()) for name, r in runs.items()}
    meta = {name: r["pretrain"] for name, r in res.items()}
    assert [meta[n]["cached"] for n in "abcd"] == [False, True, False, True]
    assert meta["a"]["train_seconds"] >= 0.0 and meta["b"]["train_seconds"] == meta["a"][
        "train_seconds"]                     # the cached stage's own cost, for cost reports
    assert meta["a"]["hash"] == meta["b"]["hash"] == meta["d"]["hash"] != meta["c"]["hash"]
    assert res["c"]["config"]["task"]["pretrain"]["seed"] == 1
    upright = {n: r["metrics"]["upright_accuracy"] for n, r in res.items()}
    assert upright["a"] == upright["b"] == upright["d"]


def test_random_init_is_explicit_and_recorded(tmp_path):
    cfg = compose_config(*TINY, "method=equitune", "backbone.pretrained=false", tmp=tmp_path)
    res = json.loads(execute(cfg, tmp_path / "r").results_path.read_text())
    assert res["pretrained"] is False and res["pretrain"] is None
    assert not (tmp_path / "cache").exists()


def test_same_seed_same_metrics(tmp_path):
    runs = [execute(compose_config(*TINY, "method=equizero", tmp=tmp_path), tmp_path / d)
            for d in ("x", "y")]
    metrics = [json.loads(r.results_path.read_text())["metrics"] for r in runs]
    assert metrics[0] == metrics[1]


def test_wandb_logger_gets_config_curves_and_summary(tmp_path, monkeypatch):
    """A whole run with ``logger=wandb`` against a recording stand-in for the wandb module."""
    import sys
    import types

    calls = {"init": [], "log": [], "summary": {}, "finish": 0}

    class Run:
        summary = types.SimpleNamespace(update=calls["summary"].update)

        def log(self, metrics, step=None):
            calls["log"].append((metrics, step))

        def finish(self):
            calls["finish"] += 1

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config(*TINY, "method=equitune", "logger=wandb", "exp_name=e1", tmp=tmp_path)
    res = json.loads(execute(cfg, tmp_path / "w").results_path.read_text())
    (init,) = calls["init"]
    assert init["group"] == "e1" and {"digits_rot90", "equitune"} <= set(init["tags"])
    assert init["config"]["method"]["name"] == "equitune"
    assert [(m["test_accuracy"], s) for m, s in calls["log"]] == [
        (p["value"], p["step"]) for p in res["curves"]["test_accuracy"]]
    assert calls["summary"]["finetuned_accuracy"] == res["metrics"]["finetuned_accuracy"]
    assert calls["finish"] == 1


@pytest.mark.slow
def test_run_py_scan_smoke(tmp_path):
    """The SCAN task through the real CLI: tiny GRU, a few examples, every stage once."""
    from tests.test_scan_experiment import SCAN_TINY

    proc = run_py(*SCAN_TINY, "method=equizero", "group=scan_verb4",
                  f"output_root={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val / test exact match, zero-shot" in proc.stdout
    (results_file,) = (tmp_path / "out" / "scan_add_jump" / "equizero").rglob("results.json")
    res = json.loads(results_file.read_text())
    assert res["config"]["cpu_threads"] == 1 and res["group"] == "scan_verb4"
    assert res["metrics"]["equivariance_agreement"] == 1.0
