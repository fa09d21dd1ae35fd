"""The DQN tasks end to end, in-process with tiny Q-networks and budgets."""

import json
import math
from pathlib import Path

import pytest
import torch

import equiv.experiments.dqn.protocol as protocol
from equiv.errors import ConfigError
from equiv.runner import execute, format_summary, validate
from tests.helpers import compose_config

ENVS = {"gridworld": "qnet_tiny_cnn", "cartpole": "qnet_tiny_mlp", "acrobot": "qnet_tiny_mlp"}
METHODS = ["vanilla", "equitune", "lambda_equitune", "equizero", "canonicalize"]


def dqn_tiny(env):
    budget = []
    for stage in ("pretrain", "finetune"):
        budget += [f"task.{stage}.dqn.total_steps=64", f"task.{stage}.dqn.learning_starts=16",
                   f"task.{stage}.dqn.eval_every=32", f"task.{stage}.dqn.eval_episodes=2",
                   f"task.{stage}.dqn.checkpoint_every=32", f"task.{stage}.dqn.batch_size=8",
                   f"task.{stage}.dqn.num_envs=2"]
    return [f"task=dqn_{env}", f"backbone={ENVS[env]}", *budget,
            "++method.lambda_phase.steps=6", "++method.lambda_phase.batch_size=8"]


CANONICALIZE_DQN = ["method.prior_phase.steps=6", "method.prior_phase.batch_size=8",
                    "method.canonicalizer_phase.steps=6", "method.canonicalizer_phase.batch_size=8"]


def run_dqn(tmp_path, env, *overrides, name="run"):
    cfg = compose_config(*dqn_tiny(env), *overrides, tmp=tmp_path)
    return json.loads(execute(cfg, tmp_path / name).results_path.read_text())


# Every method on the order-4 Gridworld; the wrappers are env-agnostic (their equivariance is
# tested per symmetry in test_dqn_equivariance.py), so the other envs run two methods.
CASES = [("gridworld", m) for m in METHODS] + [(e, m) for e in ("cartpole", "acrobot")
                                                for m in ("vanilla", "lambda_equitune",
                                                          "canonicalize")]


@pytest.mark.parametrize(("env", "method"), CASES)
def test_methods_run_end_to_end(env, method, tmp_path):
    res = run_dqn(tmp_path, env, f"method={method}",
                  *(CANONICALIZE_DQN if method == "canonicalize" else []))
    m = res["metrics"]
    assert {"pretrained_return", "return_zero_shot", "return_finetuned"} <= set(m)
    steps = [p["step"] for p in res["curves"]["return"]]
    assert steps[0] == 0 and steps[-1] >= 64 and steps == sorted(steps)
    assert res["curves"]["return"][-1]["value"] == m["return_finetuned"]
    assert not (tmp_path / "run" / protocol.PROGRESS_FILE).exists()
    if method == "canonicalize":
        assert {"return_canonicalizer_phase", "zero_shot_upright_identity",
                "canonicalizer_phase_upright_identity", "finetuned_upright_identity"} <= set(m)


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


@pytest.mark.parametrize("method", ["equizero", "lambda_equitune"])
def test_interrupted_finetuning_resumes_to_the_same_metrics(method, tmp_path, monkeypatch):
    """Killed right after the first finetuning checkpoint, then rerun: the same metrics and
    curves (λ-equitune redoes its deterministic λ phase, then loads the checkpoint)."""
    reference = run_dqn(tmp_path, "cartpole", f"method={method}", name="reference")
    import equiv.train_state as train_state

    calls = []
    original = train_state.save_atomic

    def save_then_stop(obj, path):
        original(obj, path)
        calls.append(path)
        if path.parent.name == "resumed":
            raise KeyboardInterrupt
    monkeypatch.setattr(train_state, "save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_dqn(tmp_path, "cartpole", f"method={method}", name="resumed")
    assert calls
    monkeypatch.undo()
    resumed = run_dqn(tmp_path, "cartpole", f"method={method}", name="resumed")
    drop = ("train_steps_per_second",)
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == {
        k: v for k, v in reference["metrics"].items() if k not in drop}
    assert resumed["curves"] == reference["curves"]
    if method == "lambda_equitune":
        assert "return_lambda_phase" in resumed["metrics"]


@pytest.mark.parametrize(("override", "fragment"), [
    ("backbone=qnet_tiny_mlp", "does not fit task dqn_gridworld"),
    ("group=cartpole_reflect", "group=cartpole_reflect does not fit task dqn_gridworld"),
    ("task.finetune.dqn.total_steps=0",
     "task.finetune.dqn.total_steps=0 is not valid: an integer >= 1"),
    ("task.pretrain.dqn.lr=fast", "task.pretrain.dqn.lr='fast' must be a number"),
    ("+task.finetune.dqn.epsilon=0.1", "task.finetune.dqn has unknown keys epsilon"),
])
def test_bad_dqn_configs_are_rejected(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(compose_config(*dqn_tiny("gridworld"), override))


def test_lambda_phase_without_a_pretrained_agent_is_refused():
    with pytest.raises(ConfigError, match=r"method.lambda_phase.steps=6 needs a pretrained "
                                          r"Q-network .*; set method.lambda_phase.steps=0"):
        validate(compose_config(*dqn_tiny("cartpole"), "method=lambda_equitune",
                                "backbone.pretrained=false"))
    validate(compose_config(*dqn_tiny("cartpole"), "method=lambda_equitune",
                            "backbone.pretrained=false", "method.lambda_phase.steps=0"))


def spy_on(monkeypatch, name):
    """Wrap ``protocol.<name>`` so that the λ-equitune model's weights before and after each
    call are kept (its first argument is the model)."""
    calls = []
    original = getattr(protocol, name)

    def spy(model, *args, **kwargs):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = original(model, *args, **kwargs)
        after = {k: v.clone() for k, v in model.state_dict().items()}
        if any(k.startswith("lambda_net.") for k in after):      # not the pretraining's calls
            calls.append({"before": before, "after": after})
        return result
    monkeypatch.setattr(protocol, name, spy)
    return calls


def changed(call, prefix):
    """Whether any tensor under ``prefix`` changed bit for bit, and whether any other did."""
    b, a = call["before"], call["after"]
    ours = [not torch.equal(b[k], a[k]) for k in b if k.startswith(prefix)]
    others = [not torch.equal(b[k], a[k]) for k in b if not k.startswith(prefix)]
    assert ours and others
    return any(ours), any(others)


@pytest.mark.parametrize("env", ["cartpole", "gridworld"])
def test_lambda_phase_trains_lambda_alone(env, tmp_path, monkeypatch):
    """The λ phase changes the λ-network and leaves the backbone bit-identical; its return, its
    loss and TD-loss curves and the weights it gives each view are recorded, and the return
    curve starts from the return after the phase."""
    calls = spy_on(monkeypatch, "lambda_phase")
    res = run_dqn(tmp_path, env, "method=lambda_equitune", "task.finetune.enabled=false")
    assert len(calls) == 1
    assert changed(calls[0], "lambda_net.") == (True, False)
    m, curves = res["metrics"], res["curves"]
    assert {"return_zero_shot", "return_lambda_phase"} <= set(m)
    assert "return_finetuned" not in m
    assert curves["return"] == [{"step": 0, "value": m["return_lambda_phase"]}]
    assert [p["step"] for p in curves["lambda_phase_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [p["step"] for p in curves["lambda_phase_td_loss"]] == [0, 1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(p["value"]) for p in curves["lambda_phase_loss"])
    phase = res["lambda_phase"]
    assert phase["transitions"] == 48 and phase["steps"] == 6
    assert len(phase["mean_weight_per_view"]) == {"cartpole": 2, "gridworld": 4}[env]
    assert sum(phase["mean_weight_per_view"]) == pytest.approx(1.0, abs=1e-5)


def test_no_lambda_phase_with_zero_steps(tmp_path, monkeypatch):
    calls = spy_on(monkeypatch, "lambda_phase")
    res = run_dqn(tmp_path, "cartpole", "method=lambda_equitune", "method.lambda_phase.steps=0",
                  "task.finetune.enabled=false")
    assert calls == [] and "return_lambda_phase" not in res["metrics"]
    assert res["curves"]["return"] == [{"step": 0, "value": res["metrics"]["return_zero_shot"]}]


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_lambda_is_honoured_in_finetuning(freeze, tmp_path, monkeypatch):
    """``method.freeze_lambda=true``: finetuning trains the backbone and leaves λ bit-identical;
    ``false``: both change."""
    calls = spy_on(monkeypatch, "train_dqn")
    run_dqn(tmp_path, "cartpole", "method=lambda_equitune", f"method.freeze_lambda={freeze}")
    assert len(calls) == 1
    lam, backbone = changed(calls[0], "lambda_net.")
    assert backbone and lam == (not freeze)
