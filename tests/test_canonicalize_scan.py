"""Canonicalization on SCAN: one canonical view decoded per command, exactly equivariant.

float64 property checks under every SCAN word group (``scan_verb4`` is of order 4, so a
``g`` vs ``g⁻¹`` mistake shows), in evaluation and training mode (dropout: the same random
state for ``x`` and ``g·x``), of both decoding and the finetuning loss; then the protocol end
to end with a tiny GRU, and its resume.
"""

import pytest
import torch
import torch.nn.functional as F

from equiv.backbones.seq2seq import Seq2Seq
from equiv.data.vocab import PAD, SOS
from equiv.groups import words
from equiv.methods import TokenViewScorer
from equiv.methods.sequence import CanonicalizeSeq2Seq, build_seq2seq_wrapper
from tests.helpers import talkative_seq2seq
from tests.test_scan_experiment import Interrupt, interrupt_after_saves, run_scan
from tests.test_sequence_methods import IN, OUT, commands_moved_by, gold_batch

GROUPS = ["scan_verb4", "scan_verb", "scan_direction"]


def wrapped(name: str, cell: str = "gru", seed: int = 0) -> CanonicalizeSeq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(len(IN), len(OUT), hidden=12, cell=cell, dropout=0.3).double().eval()
    action = getattr(words, name)(IN, OUT)
    talkative_seq2seq(model, action)
    scorer = TokenViewScorer(action, len(IN), dim=8, hidden=8, seed=seed).double()
    return build_seq2seq_wrapper(model, action, "canonicalize", canonicalizer=scorer,
                                 temperature=0.5)


def same_state(fn, *args):
    """``fn(*args)`` from one fixed random state (dropout masks, teacher-forcing draws)."""
    torch.manual_seed(1234)
    return fn(*args)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("name", GROUPS)
def test_decoding_is_equivariant(name, cell, train):
    sym = wrapped(name, cell).train(train)
    src = commands_moved_by(sym.action)
    out = same_state(sym.decode, src, 12)
    one = torch.ones(len(src), dtype=torch.long)
    assert (sym.out_tokens.apply(out, one) != out).float().mean() > 0.2    # not vacuous
    best = sym.select(src)[0]
    assert len(best.unique()) > 1                                          # views are chosen
    for g in sym.action.elements:
        moved_src = sym.action.act_in(src, g)
        picked = [sym.action.compose(b, sym.action.inverse(g)) for b in best.tolist()]
        assert sym.select(moved_src)[0].tolist() == picked                 # g·x picks g*·g⁻¹
        moved = same_state(sym.decode, moved_src, 12)
        assert torch.equal(moved, sym.out_tokens.apply(out, torch.full((len(src),), g)))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", GROUPS)
def test_loss_is_invariant(name, train):
    sym = wrapped(name).train(train)
    src, tgt = gold_batch()

    def loss(s, t):
        return sym.loss(s, t, 0.5, torch.Generator().manual_seed(7)).item()

    reference = same_state(loss, src, tgt)
    for g in sym.action.elements:
        gs = torch.full((len(src),), g)
        assert same_state(loss, sym.action.act_in(src, gs), sym.out_tokens.apply(tgt, gs)) \
            == pytest.approx(reference, abs=1e-10)


def test_inverse_mistake_is_caught():
    """Mapping the canonical view's decoding back by g* instead of g*⁻¹ breaks order 4."""
    sym = wrapped("scan_verb4")
    src = commands_moved_by(sym.action)
    good = sym.out_tokens
    expected = [good.apply(sym.decode(src, 12), torch.full((len(src),), g)) for g in range(4)]
    sym.out_tokens = type(good)(good.table[[0, 3, 2, 1]])                  # rows g -> g⁻¹
    got = [sym.decode(sym.action.act_in(src, g), 12) for g in range(4)]
    assert not all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_evaluation_decodes_one_row_per_command():
    sym = wrapped("scan_verb4")
    rows = []
    encode = sym.model.encode
    sym.model.encode = lambda s: rows.append(s.shape[0]) or encode(s)
    src = commands_moved_by(sym.action, n=5)
    sym.decode(src, 8)
    assert rows == [5]                               # B rows, not |G|·B


def test_loss_is_the_canonical_views_nll_with_a_straight_through_gradient():
    sym = wrapped("scan_verb4")
    src, tgt = gold_batch()
    loss = sym.loss(src, tgt, teacher_forcing=1.0)
    best, scores = sym.select(src)
    view_tgt = sym.out_tokens.apply(tgt, best)
    tgt_in = torch.cat([torch.full((len(tgt), 1), SOS), view_tgt[:, :-1]], dim=1)
    logits = sym.model(sym.action.act_in(src, best), tgt_in)
    nll = F.cross_entropy(logits.flatten(0, 1), view_tgt.flatten(), ignore_index=PAD)
    assert loss.item() == pytest.approx(nll.item(), abs=1e-10)
    loss.backward()
    per_sequence = F.cross_entropy(logits.flatten(0, 1), view_tgt.flatten(), ignore_index=PAD,
                                   reduction="none").view(len(src), -1).sum(1).detach()
    p = (scores / sym.temperature).softmax(0)[best, torch.arange(len(src))]
    expected = torch.autograd.grad((per_sequence * p).sum() / (tgt != PAD).sum(),
                                   sym.canonicalizer.scorer.head.weight)[0]
    assert torch.allclose(sym.canonicalizer.scorer.head.weight.grad, expected, atol=1e-10)


def test_prior_loss_and_identity_share():
    sym = wrapped("scan_verb")
    src = commands_moved_by(sym.action)
    best, scores = sym.select(src)
    assert sym.identity_share(src) == (best == 0).double().mean().item()
    expected = -scores.log_softmax(0)[0].mean()
    assert sym.prior_loss(src).item() == pytest.approx(expected.item(), abs=1e-12)


def test_scores_ignore_padding():
    """A command scores the same padded or not, so its view never depends on its batch."""
    sym = wrapped("scan_verb4")
    src = commands_moved_by(sym.action, n=4)
    padded = torch.cat([src, torch.full((4, 3), PAD)], dim=1)
    assert torch.allclose(sym.select(padded)[1], sym.select(src)[1], atol=1e-12)


def test_relaxed_gradient_is_refused():
    sym = wrapped("scan_verb")
    with pytest.raises(ValueError, match="straight_through"):
        CanonicalizeSeq2Seq(sym.model, sym.action, sym.canonicalizer, gradient="relaxed")


CANON_TINY = ["method=canonicalize", "group=scan_verb4", "++method.prior_phase.steps=3",
              "++method.prior_phase.batch_size=4", "++method.canonicalizer_phase.steps=2",
              "++method.canonicalizer_phase.batch_size=4",
              "task.canonicalizer.dim=4", "task.canonicalizer.hidden=4"]


def test_protocol_reports_every_phase_and_the_selection(tmp_path):
    res = run_scan(tmp_path, *CANON_TINY)
    m = res["metrics"]
    for stage in ("zero_shot", "canonicalizer_phase"):
        for key in (f"val_acc_{stage}", f"test_acc_{stage}", f"test_identity_share_{stage}",
                    f"test_canonical_in_training_{stage}"):
            assert 0.0 <= m[key] <= 1.0, key
    for key in ("val_acc", "test_acc", "test_identity_share", "test_canonical_in_training"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["test_canonical_in_training"] <= m["test_view_ceiling"]
    assert m["test_acc_canonicalizer_phase"] == res["curves"]["test_acc"][0]["value"]
    assert m["equivariance_agreement_zero_shot"] == m["equivariance_agreement"] == 1.0
    assert res["parameters"]["added"] > 0                     # the canonicalizer


def test_relaxed_gradient_is_a_config_error(tmp_path):
    from equiv.errors import ConfigError
    from equiv.runner import validate
    from tests.helpers import compose_config
    from tests.test_scan_experiment import SCAN_TINY

    cfg = compose_config(*SCAN_TINY, *CANON_TINY, "method.gradient=relaxed")
    with pytest.raises(ConfigError, match=r"method\.gradient='relaxed' is not available on SCAN"):
        validate(cfg)


def test_interrupted_finetuning_resumes_to_the_same_metrics(tmp_path, monkeypatch):
    args = (*CANON_TINY, "task.finetune.iterations=6")
    reference = run_scan(tmp_path, *args, name="reference")
    interrupt_after_saves(monkeypatch, "finetune", 1)
    with pytest.raises(Interrupt):
        run_scan(tmp_path, *args, name="resumed")
    monkeypatch.undo()
    resumed = run_scan(tmp_path, *args, name="resumed")
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["curves"] == reference["curves"]


def test_frozen_canonicalizer_keeps_its_choices_through_finetuning(tmp_path):
    m = run_scan(tmp_path, *CANON_TINY, "method.freeze_canonicalizer=true")["metrics"]
    for key in ("identity_share", "canonical_in_training"):
        assert m[f"test_{key}"] == m[f"test_{key}_canonicalizer_phase"]
