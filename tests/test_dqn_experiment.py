"""The DQN tasks end to end, in-process with tiny Q-networks and budgets."""

import json
from pathlib import Path

import pytest

import experiments.dqn.protocol as protocol
from equiv.config import ConfigError
from equiv.runner import execute, format_summary, validate
from tests.helpers import compose_config

ENVS = {"gridworld": "qnet_tiny_cnn", "cartpole": "qnet_tiny_mlp", "acrobot": "qnet_tiny_mlp"}
METHODS = ["vanilla", "equitune", "lambda_equitune", "equizero"]


def dqn_tiny(env):
    budget = []
    for stage in ("pretrain", "finetune"):
        budget += [f"task.{stage}.dqn.total_steps=64", f"task.{stage}.dqn.learning_starts=16",
                   f"task.{stage}.dqn.eval_every=32", f"task.{stage}.dqn.eval_episodes=2",
                   f"task.{stage}.dqn.checkpoint_every=32", f"task.{stage}.dqn.batch_size=8",
                   f"task.{stage}.dqn.num_envs=2"]
    return [f"task=dqn_{env}", f"backbone={ENVS[env]}", *budget]


def run_dqn(tmp_path, env, *overrides, name="run"):
    cfg = compose_config(*dqn_tiny(env), *overrides, tmp=tmp_path)
    return json.loads(execute(cfg, tmp_path / name).results_path.read_text())


# Every method on the order-4 Gridworld; the wrappers are env-agnostic (their equivariance is
# tested per symmetry in test_dqn_equivariance.py), so the other envs run two methods.
CASES = [("gridworld", m) for m in METHODS] + [(e, m) for e in ("cartpole", "acrobot")
                                                for m in ("vanilla", "lambda_equitune")]


@pytest.mark.parametrize(("env", "method"), CASES)
def test_methods_run_end_to_end(env, method, tmp_path):
    res = run_dqn(tmp_path, env, f"method={method}")
    m = res["metrics"]
    assert {"pretrained_return", "return_zero_shot", "return_finetuned"} <= set(m)
    steps = [p["step"] for p in res["curves"]["return"]]
    assert steps[0] == 0 and steps[-1] >= 64 and steps == sorted(steps)
    assert res["curves"]["return"][-1]["value"] == m["return_finetuned"]
    assert not (tmp_path / "run" / protocol.PROGRESS_FILE).exists()


@pytest.mark.parametrize("env", sorted(ENVS))
def test_run_py_path_per_environment(env, tmp_path):
    """What ``python run.py task=dqn_<env> method=equizero`` does, in-process (the subprocess
    path is covered once, in test_run_e2e.py): results.json with the run's identity, the printed
    summary, the shared pretraining cache reused, and a complete run skipped."""
    cfg = compose_config(*dqn_tiny(env), "method=equizero", "seed=1", tmp=tmp_path)
    first = execute(cfg, tmp_path / "run")
    res = json.loads(first.results_path.read_text())
    assert (res["status"], res["task"], res["method"], res["backbone"], res["seed"]) == (
        "complete", f"dqn_{env}", "equizero", ENVS[env], 1)
    assert res["group"] == {"gridworld": "grid_rot90", "cartpole": "cartpole_reflect",
                            "acrobot": "acrobot_reflect"}[env]
    assert res["config"]["task"]["family"] == "dqn" and res["pretrained"] is True
    pretrain = res["pretrain"]
    assert Path(pretrain["checkpoint"]).is_file()
    text = format_summary(cfg, first)
    assert "zero-shot return on the full distribution" in text and "finetuning" in text
    assert f"results: {first.results_path}" in text
    other = execute(compose_config(*dqn_tiny(env), "method=vanilla", "seed=1", tmp=tmp_path),
                    tmp_path / "other")
    again = json.loads(other.results_path.read_text())
    assert again["pretrain"]["checkpoint"] == pretrain["checkpoint"]   # cached, not retrained
    assert again["metrics"]["pretrained_return"] == res["metrics"]["pretrained_return"]
    skipped = execute(cfg, tmp_path / "run")
    assert skipped.skipped and format_summary(cfg, skipped).startswith("skip: ")


def test_interrupted_finetuning_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    reference = run_dqn(tmp_path, "cartpole", "method=equizero", name="reference")
    calls = []
    original = protocol.save_atomic

    def save_then_stop(obj, path):
        original(obj, path)
        calls.append(path)
        if path.parent.name == "resumed":
            raise KeyboardInterrupt
    monkeypatch.setattr(protocol, "save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_dqn(tmp_path, "cartpole", "method=equizero", name="resumed")
    monkeypatch.undo()
    resumed = run_dqn(tmp_path, "cartpole", "method=equizero", name="resumed")
    drop = ("train_steps_per_second",)
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == {
        k: v for k, v in reference["metrics"].items() if k not in drop}
    assert resumed["curves"]["return"] == reference["curves"]["return"]


@pytest.mark.parametrize(("override", "fragment"), [
    ("backbone=qnet_tiny_mlp", "does not fit task dqn_gridworld"),
    ("group=cartpole_reflect", "group=cartpole_reflect does not fit task dqn_gridworld"),
    ("task.finetune.dqn.total_steps=0", "task.finetune.dqn.total_steps=0 must be an integer"),
    ("task.pretrain.dqn.lr=fast", "task.pretrain.dqn.lr='fast' must be a number"),
    ("+task.finetune.dqn.epsilon=0.1", "task.finetune.dqn has unknown keys epsilon"),
])
def test_bad_dqn_configs_are_rejected(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(compose_config(*dqn_tiny("gridworld"), override))


def test_config_keys_are_the_trainer_fields():
    import dataclasses

    from equiv.rl import DQNConfig
    from experiments.dqn import DQN_KEYS

    assert {f.name for f in dataclasses.fields(DQNConfig)} == DQN_KEYS
