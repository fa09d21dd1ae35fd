"""The SCAN task end to end, in-process with a tiny GRU: metrics, selection, caching, resume."""

import json
from pathlib import Path

import pytest
import torch

import equiv.experiments.scan.protocol as protocol
import equiv.train_state as train_state
from equiv.data.vocab import EOS, PAD, Vocab
from equiv.errors import ConfigError
from equiv.experiments.scan.data import encode, load, vocabularies
from equiv.experiments.scan.views import (
    command_ids,
    in_training_views,
    oracle_exact_match,
    training_file_commands,
    view_ceiling,
)
from equiv.groups import words
from equiv.groups.words import word_permutation
from equiv.pretraining import save_atomic
from equiv.runner import execute, validate
from tests.helpers import CONFIG_DIR, compose_config

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
    # The group's view ceiling and the oracle: cheap, in every run, oracle <= ceiling.
    assert 0.0 <= m["test_view_ceiling_seen"] <= m["test_view_ceiling"] <= 1.0
    assert 0.0 <= m["test_acc_oracle"] <= m["test_view_ceiling"]
    if method == "lambda_equitune":      # zero-shot = untrained λ; the curve starts after λ
        assert m["test_acc_lambda_phase"] == res["curves"]["test_acc"][0]["value"]
        assert m["val_acc_lambda_phase"] == res["curves"]["val_acc"][0]["value"]
    else:
        assert "test_acc_lambda_phase" not in m
        assert m["test_acc_zero_shot"] == res["curves"]["test_acc"][0]["value"]
    assert not (tmp_path / "run" / protocol.PROGRESS_FILE).exists()


def test_pretraining_is_cached_and_shared(tmp_path):
    """Shared by the methods of a seed (and across seeds with an integer task.pretrain.seed)."""
    first = run_scan(tmp_path, "method=vanilla", name="a")
    second = run_scan(tmp_path, "method=equizero", "seed=1", "task.pretrain.seed=0", name="b")
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


def interrupt_after_saves(monkeypatch, stage, n):
    """Raise after the ``n``-th progress file of ``stage`` (``pretrain``, in the cache, or
    ``finetune``, in the run directory) is written, as a kill would."""
    calls = []

    def save_then_maybe_stop(obj, path):
        save_atomic(obj, path)
        if ("pretrained" in Path(path).parts) == (stage == "pretrain"):
            calls.append(path)
            if len(calls) == n:
                raise Interrupt
    monkeypatch.setattr(train_state, "save_atomic", save_then_maybe_stop)


def test_interrupted_finetuning_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    args = ("method=equizero", "task.finetune.iterations=6")
    reference = run_scan(tmp_path, *args, name="reference")
    interrupt_after_saves(monkeypatch, "finetune", 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path, *args, name="resumed")
    assert (tmp_path / "resumed" / protocol.PROGRESS_FILE).exists()
    assert not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.undo()
    resumed = run_scan(tmp_path, *args, name="resumed")
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["curves"] == reference["curves"]


def test_progress_of_another_config_is_not_resumed(tmp_path, monkeypatch):
    interrupt_after_saves(monkeypatch, "finetune", 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path, "method=equitune", "task.finetune.eval_every=1", name="r")
    monkeypatch.undo()
    fresh = run_scan(tmp_path, "method=equitune", name="r")
    # Resuming the other config's progress (saved after update 1) would add its step-2 point.
    assert [p["step"] for p in fresh["curves"]["test_acc"]] == [0, 4, 8]


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = run_scan(tmp_path / "ref", "method=vanilla")
    interrupt_after_saves(monkeypatch, "pretrain", 1)
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
    ("task.finetune.iterations=-1", "task.finetune.iterations=-1 is not valid: an integer >= 0"),
    ("task.data.eval_limit=0", "task.data.eval_limit=0 is not valid: an integer >= 1"),
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


# A toy grammar with an order-4 cycle a -> b -> c -> d (not an involution: g=1 and g⁻¹=3
# differ), so a swapped g/g⁻¹ finds the wrong view and maps decodings back wrongly.
TOY_IN, TOY_OUT = Vocab(["a", "b", "c", "d", "e", "twice"]), Vocab(["A", "B", "C", "D", "E"])
TOY_TRAIN = {"b twice": "B B", "c": "C", "a": "A"}
TOY_TEST = [("a twice", "A A"),      # only its view under g=1 ("b twice") is in training
            ("d", "D"),              # views under g=1 ("a"), g=3 ("c") are in training
            ("e", "E")]              # the group fixes it: no view in training


def toy_action():
    return word_permutation([["a", "b", "c", "d"]], [["A", "B", "C", "D"]], TOY_IN, TOY_OUT)


def test_view_ceiling_on_a_toy_order4_group():
    action, test = toy_action(), encode(TOY_TEST, TOY_IN, TOY_OUT)
    hits = in_training_views(test.src, action, command_ids(list(TOY_TRAIN), TOY_IN))
    assert hits.tolist() == [[False, False, False],     # identity: test commands are new
                             [True, True, False],       # g=1: a->b, d->a
                             [False, False, False],     # g=2: a->c twice, d->b
                             [False, True, False]]      # g=3: d->c
    assert view_ceiling(hits) == 2 / 3
    for g, b in hits.nonzero().tolist():                # each hit really is g·x
        view = action.act_in(test.src[b : b + 1], g)[0]
        assert TOY_IN.decode([t for t in view.tolist() if t != PAD] + [EOS]) in TOY_TRAIN


class LookupDecoder(torch.nn.Module):
    """Decodes the toy training commands perfectly and anything else to nothing (EOS)."""

    def decode(self, src, max_len):
        out = torch.full((src.shape[0], max_len), PAD, dtype=torch.long)
        for i, row in enumerate(src.tolist()):
            command = TOY_IN.decode([t for t in row if t != PAD] + [EOS])
            ids = TOY_OUT.encode(TOY_TRAIN[command]) if command in TOY_TRAIN else [EOS]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def test_oracle_maps_the_in_training_view_back_by_the_inverse():
    action, test = toy_action(), encode(TOY_TEST, TOY_IN, TOY_OUT)
    hits = in_training_views(test.src, action, command_ids(list(TOY_TRAIN), TOY_IN))
    acc = oracle_exact_match(LookupDecoder(), action, test, hits, 2, 6, torch.device("cpu"))
    assert acc == 2 / 3           # "a twice" <- g⁻¹·"B B"; "d" <- g⁻¹·"A" (or "C"); not "e"
    only_g1 = hits.clone()
    only_g1[3] = False            # "d" from its g=1 view "a" alone: g⁻¹=3 maps A to D
    assert oracle_exact_match(LookupDecoder(), action, test, only_g1, 8, 6,
                              torch.device("cpu")) == 2 / 3
    only_g3 = hits.clone()
    only_g3[1, 1] = False         # "d" from its g=3 view "c" alone: g⁻¹=1 maps C to D
    assert oracle_exact_match(LookupDecoder(), action, test, only_g3, 8, 6,
                              torch.device("cpu")) == 2 / 3


@pytest.mark.parametrize(("split", "group", "ceiling", "seen"), [
    ("add_jump", "scan_verb", 0.771, 0.615),
    ("around_right", "scan_direction", 0.839, 0.672),
    ("add_jump", "scan_verb4", 1.0, 0.971),
])
def test_view_ceilings_of_the_scan_splits(split, group, ceiling, seen):
    data = load(split, 0.2, 0)
    action = getattr(words, group)(data.in_vocab, data.out_vocab)
    full = in_training_views(data.test.src, action, training_file_commands(split, data.in_vocab))
    part = in_training_views(data.test.src, action,
                             command_ids([c for c, _ in data.train.pairs], data.in_vocab))
    assert view_ceiling(full) == pytest.approx(ceiling, abs=5e-4)
    assert view_ceiling(part) == pytest.approx(seen, abs=5e-4)


def test_add_jump_verb4_task_is_add_jump_under_scan_verb4_with_the_same_pretraining():
    from omegaconf import OmegaConf

    preset = OmegaConf.load(CONFIG_DIR / "experiment" / "scan.yaml").hydra.sweeper.params.task
    assert "scan_add_jump_verb4" in preset.split(",")
    verb4 = compose_config("task=scan_add_jump_verb4", "backbone=seq2seq_rnn", "seed=2")
    plain = compose_config("task=scan_add_jump", "group=scan_verb4", "backbone=seq2seq_rnn",
                           "seed=2")
    assert verb4.group.name == "scan_verb4" and verb4.task.name == "scan_add_jump_verb4"
    a, b = (OmegaConf.to_container(c, resolve=True) for c in (verb4, plain))
    a["task"].pop("name"), b["task"].pop("name"), a.pop("run_subdir"), b.pop("run_subdir")
    assert a == b                       # everything else, the pretraining key included
