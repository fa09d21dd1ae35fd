"""The SCAN task end to end, in-process with a tiny GRU: metrics, selection, caching, resume."""

import json

import pytest
import torch

import experiments.scan.protocol as protocol
from equiv.config import ConfigError
from equiv.pretraining import save_atomic
from equiv.runner import execute, validate
from experiments.scan.data import load, vocabularies
from tests.helpers import compose_config

SCAN_TINY = [
    "task=scan_add_jump",
    "backbone=seq2seq_tiny",
    "task.pretrain.examples=128",
    "task.pretrain.batch_size=32",
    "task.pretrain.eval_every_examples=64",
    "task.data.eval_limit=24",
    "task.finetune.iterations=4",
    "task.finetune.batch_size=2",
    "task.finetune.eval_every=2",
    "task.max_decode_len=12",
    "++method.lambda_phase.steps=2",
    "++method.lambda_phase.batch_size=4",
]
METHODS = ["vanilla", "equitune", "lambda_equitune", "equizero"]


def run_scan(tmp_path, *overrides, name="run"):
    cfg = compose_config(*SCAN_TINY, *overrides, tmp=tmp_path)
    report = execute(cfg, tmp_path / name)
    return json.loads(report.results_path.read_text())


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_reports(method, tmp_path):
    res = run_scan(tmp_path, f"method={method}", "group=scan_verb4")
    m = res["metrics"]
    for key in ("val_acc_zero_shot", "test_acc_zero_shot", "val_acc", "test_acc",
                "test_acc_last", "selected_step", "pretrained_val_acc"):
        assert m[key] is not None, key
    assert [p["step"] for p in res["curves"]["test_acc"]] == [0, 4, 8]     # examples seen
    # The selected evaluation is the best validation one (earliest on ties).
    vals = res["curves"]["val_acc"]
    best = max(vals, key=lambda p: (p["value"], -p["step"]))
    assert m["selected_step"] == best["step"] and m["val_acc"] == best["value"]
    if method != "vanilla":
        assert m["equivariance_agreement"] == 1.0
        assert m["equivariance_agreement_zero_shot"] == 1.0
    if method == "lambda_equitune":
        assert "test_acc_before_lambda" in m
    assert not (tmp_path / "run" / protocol.PROGRESS_FILE).exists()


def test_pretraining_is_cached_and_shared(tmp_path):
    first = run_scan(tmp_path, "method=vanilla", name="a")
    second = run_scan(tmp_path, "method=equizero", "seed=1", name="b")
    assert first["pretrain"]["cached"] is False
    assert second["pretrain"]["cached"] is True
    assert first["pretrain"]["hash"] == second["pretrain"]["hash"]
    assert first["metrics"]["pretrained_val_acc"] == second["metrics"]["pretrained_val_acc"]


def test_paper_code_compat_switches(tmp_path):
    res = run_scan(tmp_path, "method=equizero", "task.paper_code_compat=true")
    assert res["settings"] == {"combine": "logprob", "proxy": "mean_max_prob_padded",
                                        "select": "last"}
    assert res["metrics"]["selected_step"] == 8
    assert res["metrics"]["test_acc"] == res["metrics"]["test_acc_last"]


class Interrupt(Exception):
    pass


def interrupt_after_saves(monkeypatch, module, n):
    """Make ``module.save_atomic`` raise after its ``n``-th checkpoint, as a kill would."""
    calls = []

    def save_then_maybe_stop(obj, path):
        save_atomic(obj, path)
        calls.append(path)
        if len(calls) == n:
            raise Interrupt
    monkeypatch.setattr(module, "save_atomic", save_then_maybe_stop)


def test_interrupted_finetuning_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    args = ("method=equizero", "task.finetune.iterations=6")
    reference = run_scan(tmp_path, *args, name="reference")
    interrupt_after_saves(monkeypatch, protocol, 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path, *args, name="resumed")
    assert (tmp_path / "resumed" / protocol.PROGRESS_FILE).exists()
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.undo()
    resumed = run_scan(tmp_path, *args, name="resumed")
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["curves"] == reference["curves"]


def test_progress_of_another_config_is_not_resumed(tmp_path, monkeypatch):
    interrupt_after_saves(monkeypatch, protocol, 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path, "method=equitune", "task.finetune.eval_every=1", name="r")
    monkeypatch.undo()
    fresh = run_scan(tmp_path, "method=equitune", name="r")
    # Resuming the other config's progress (saved after update 1) would add its step-2 point.
    assert [p["step"] for p in fresh["curves"]["test_acc"]] == [0, 4, 8]


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import experiments.scan.pretrain as pretrain

    reference = run_scan(tmp_path / "ref", "method=vanilla")
    interrupt_after_saves(monkeypatch, pretrain, 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path / "new", "method=vanilla")
    monkeypatch.undo()
    resumed = run_scan(tmp_path / "new", "method=vanilla")
    assert resumed["pretrain"]["report"] == reference["pretrain"]["report"]
    weights = [torch.load(r["pretrain"]["checkpoint"], weights_only=True)
               for r in (reference, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(("override", "fragment"), [
    ("backbone=small_cnn", "does not fit task scan_add_jump"),
    ("group=rot90", "group=rot90 does not fit task scan_add_jump"),
    ("task.split=jump", "task.split='jump' is not valid"),
    ("task.combine=mean", "task.combine='mean' is not valid"),
    ("task.finetune.iterations=-1", "task.finetune.iterations=-1 must be an integer >= 0"),
    ("task.data.eval_limit=0", "task.data.eval_limit=0 must be an integer >= 1"),
    ("task.pretrain.schedule=linear", "task.pretrain.schedule='linear' is not valid"),
])
def test_bad_scan_configs_are_rejected(override, fragment):
    cfg = compose_config(*SCAN_TINY, override)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        validate(cfg)


def test_lambda_on_raw_commands_is_rejected():
    cfg = compose_config(*SCAN_TINY, "method=lambda_equitune", "method.lambda_input=input")
    with pytest.raises(ConfigError, match="valid: features"):
        validate(cfg)


def test_data_split_and_vocabularies():
    data = load("add_jump", 0.2, 0)
    assert len(data.train) + len(data.val) == 14670 and len(data.val) == 2934
    assert len(data.test) == 7706
    in_vocab, out_vocab = vocabularies()
    assert data.in_vocab.itos == in_vocab.itos and "jump" in in_vocab and "I_JUMP" in out_vocab
    gold = data.test.gold()
    assert data.out_vocab.decode(gold[0] + [2]) == data.test.pairs[0][1]
    again = load("add_jump", 0.2, 0)
    assert again.val.pairs == data.val.pairs
