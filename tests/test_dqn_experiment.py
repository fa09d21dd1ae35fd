"""The DQN tasks end to end, in-process with tiny Q-networks and budgets."""

import json

import pytest

import experiments.dqn.protocol as protocol
from equiv.config import ConfigError
from equiv.runner import execute, validate
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
])
def test_bad_dqn_configs_are_rejected(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(compose_config(*dqn_tiny("gridworld"), override))
