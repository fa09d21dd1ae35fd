"""Symmetrized seq2seq decoding is equivariant token by token, under every SCAN word group."""

import pytest
import torch

from equiv.backbones.seq2seq import Seq2Seq, pad_batch
from equiv.data.scan import all_commands
from equiv.data.vocab import PAD, Vocab
from equiv.groups import words
from equiv.methods import LambdaNet
from equiv.methods.sequence import EquituneSeq2Seq, build_seq2seq_wrapper
from tests.helpers import talkative_seq2seq

IN = Vocab(w for c, _ in all_commands() for w in c.split())
OUT = Vocab(w for _, a in all_commands() for w in a.split())
METHODS = ["equitune", "lambda_equitune", "equizero", "equitune-logprob", "equizero-entropy",
           "equizero-mean_max_prob_padded"]


def commands_moved_by(action, n=24, seed=0):
    """SCAN commands that no non-identity element leaves unchanged (trivial stabiliser)."""
    ids = [torch.tensor(IN.encode(c)) for c, _ in all_commands()]
    batch = pad_batch([t.tolist() for t in ids])
    moved = torch.stack([action.act_in(batch, g) != batch for g in action.elements[1:]])
    free = moved.flatten(2).any(-1).all(0).nonzero().squeeze(1)
    pick = free[torch.randperm(len(free), generator=torch.Generator().manual_seed(seed))[:n]]
    return batch[pick][:, : int((batch[pick] != PAD).sum(1).max())]


def wrapped(method, name, cell):
    torch.manual_seed(0)
    model = Seq2Seq(len(IN), len(OUT), hidden=12, cell=cell).double().eval()
    action = getattr(words, name)(IN, OUT)
    talkative_seq2seq(model, action)
    base, _, option = method.partition("-")
    lam = LambdaNet(12, hidden=8, dropout=0.0).double() if base == "lambda_equitune" else None
    if base == "equizero":
        return build_seq2seq_wrapper(model, action, base, proxy=option or "mean_max_prob")
    return build_seq2seq_wrapper(model, action, base, combine=option or "prob", lambda_net=lam)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("name", ["scan_direction", "scan_verb", "scan_verb4"])
@pytest.mark.parametrize("method", METHODS)
def test_decoding_is_equivariant(method, name, cell):
    sym = wrapped(method, name, cell)
    src = commands_moved_by(sym.action)
    out = sym.decode(src, max_len=12)
    moved_tokens = sym.out_tokens.apply(out, torch.ones(len(src), dtype=torch.long)) != out
    assert moved_tokens.float().mean() > 0.2                 # the check is not vacuous
    for g in sym.action.elements:
        moved = sym.decode(sym.action.act_in(src, g), max_len=12)
        assert torch.equal(moved, sym.out_tokens.apply(out, torch.full((len(src),), g)))


def test_vanilla_is_not_equivariant_and_equals_the_model():
    sym = wrapped("vanilla", "scan_verb4", "gru")
    src = commands_moved_by(sym.action)
    assert torch.equal(sym.decode(src, 12), sym.model.greedy_decode(src, 12))
    moved = sym.decode(sym.action.act_in(src, 1), 12)
    assert not torch.equal(moved, sym.out_tokens.apply(sym.decode(src, 12),
                                                        torch.ones(len(src), dtype=torch.long)))


def test_inverse_mistake_is_caught():
    """Feeding back g⁻¹·y instead of g·y breaks equivariance under the order-4 group."""
    sym = wrapped("equitune", "scan_verb4", "gru")
    good = sym.out_tokens
    sym.out_tokens = type(good)(good.table[[0, 3, 2, 1]])        # rows g -> g⁻¹
    src = commands_moved_by(sym.action)
    out = sym.decode(src, 12)
    ok = all(torch.equal(sym.decode(sym.action.act_in(src, g), 12),
                         good.apply(out, torch.full((len(src),), g))) for g in range(4))
    assert not ok


def test_equitune_combines_in_one_batch():
    sym = wrapped("equitune", "scan_verb4", "gru")
    rows = []
    encode = sym.model.encode
    sym.model.encode = lambda s: rows.append(s.shape[0]) or encode(s)
    sym.decode(commands_moved_by(sym.action, n=5), 8)
    assert rows == [4 * 5]


def gold_batch(n=6):
    pairs = [p for p in all_commands() if "jump" in p[0] or "walk" in p[0]][::97][:n]
    src = pad_batch([IN.encode(c) for c, _ in pairs])
    return src.to(torch.long), pad_batch([OUT.encode(a) for _, a in pairs])


def test_equitune_loss_is_nll_of_the_view_average():
    sym = wrapped("equitune", "scan_verb4", "gru")
    src, tgt = gold_batch()
    tgt_in = torch.cat([torch.full((len(tgt), 1), 1), tgt[:, :-1]], dim=1)   # SOS + shifted
    probs = []
    for g in sym.action.elements:
        moved_tgt_in = sym.out_tokens.apply(tgt_in, torch.full((len(src),), g))
        logp = sym.model(sym.action.act_in(src, g), moved_tgt_in).log_softmax(-1)
        probs.append(sym.action.act_out(logp, sym.action.inverse(g)).exp())
    expected = torch.nn.functional.nll_loss(torch.stack(probs).mean(0).log().flatten(0, 1),
                                            tgt.flatten(), ignore_index=PAD)
    assert torch.allclose(sym.loss(src, tgt, teacher_forcing=1.0), expected, atol=1e-10)


def test_equizero_loss_is_straight_through():
    sym = wrapped("equizero", "scan_verb4", "gru")
    src, tgt = gold_batch()
    loss = sym.loss(src, tgt, teacher_forcing=1.0)
    best = sym.select(src, 50)[1]
    _, _, views = sym.step_logprobs(src, tgt, teacher_forcing=1.0, per_view=True)
    chosen = views[best, torch.arange(len(src))]
    value = torch.nn.functional.nll_loss(chosen.flatten(0, 1), tgt.flatten(), ignore_index=PAD)
    assert torch.allclose(loss, value, atol=1e-10)
    loss.backward()
    grad = sym.model.out.weight.grad.clone()
    sym.model.zero_grad()
    EquituneSeq2Seq(sym.model, sym.action).loss(src, tgt, teacher_forcing=1.0).backward()
    assert torch.allclose(grad, sym.model.out.weight.grad, atol=1e-10)


def test_padded_proxy_is_the_authors_top1():
    """Mean over a fixed buffer where every post-EOS position scores 1/V (the authors' ``top1``),
    so of two equally confident outputs the longer one wins."""
    from equiv.methods.sequence import _sequence_proxy

    vocab, max_len = 5, 10
    logits = torch.full((2, 4, vocab), 0.0)
    logits[:, :, 3] = 2.0                                     # same confidence at every step
    tokens = torch.tensor([[3, 2, 0, 0], [3, 3, 3, 2]])       # EOS (=2) after 1 vs 3 tokens
    p_max = torch.softmax(logits[0, 0], -1).max().item()
    padded = _sequence_proxy(logits, tokens, "mean_max_prob_padded", max_len)
    expected = [-(2 * p_max + 8 / vocab) / max_len, -(4 * p_max + 6 / vocab) / max_len]
    assert torch.allclose(padded, torch.tensor(expected))
    assert padded[1] < padded[0]
    plain = _sequence_proxy(logits, tokens, "mean_max_prob")
    assert torch.allclose(plain, torch.full((2,), -p_max))


def test_equizero_identity_surrogate_has_the_selected_views_gradient():
    sym = wrapped("equizero", "scan_verb4", "gru")
    sym.surrogate = "identity"
    src, tgt = gold_batch()
    sym.loss(src, tgt, teacher_forcing=1.0).backward()
    grad = sym.model.out.weight.grad.clone()
    sym.model.zero_grad()
    best = sym.select(src, 50)[1]
    _, _, views = sym.step_logprobs(src, tgt, teacher_forcing=1.0, per_view=True)
    chosen = views[best, torch.arange(len(src))]
    torch.nn.functional.nll_loss(chosen.flatten(0, 1), tgt.flatten(), ignore_index=PAD).backward()
    assert torch.allclose(grad, sym.model.out.weight.grad, atol=1e-10)


def test_each_generic_method_class_has_its_seq2seq_variant():
    from equiv.methods import Equitune, Equizero, LambdaEquitune, Vanilla
    from equiv.methods.sequence import (
        EquizeroSeq2Seq,
        LambdaEquituneSeq2Seq,
        VanillaSeq2Seq,
        seq2seq_variant,
    )

    variants = [VanillaSeq2Seq, EquituneSeq2Seq, LambdaEquituneSeq2Seq, EquizeroSeq2Seq]
    assert [seq2seq_variant(c) for c in (Vanilla, Equitune, LambdaEquitune, Equizero)] == variants
    assert [seq2seq_variant(v.name) for v in variants] == variants
    with pytest.raises(ValueError, match=r"'Linear'; supported: Vanilla, Equitune, "
                                         r"LambdaEquitune, Equizero, Canonicalize$"):
        seq2seq_variant(torch.nn.Linear)
    with pytest.raises(ValueError, match="supported: vanilla, equitune, lambda_equitune"):
        seq2seq_variant("equi_tune")
    sym = wrapped("equizero", "scan_verb", "gru")
    with pytest.raises(TypeError, match=r"unknown seq2seq options \['proxi'\]"):
        build_seq2seq_wrapper(sym.model, sym.action, "equizero", proxi="entropy")
