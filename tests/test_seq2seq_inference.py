"""The frozen inference step computes exactly what ``Seq2Seq.decode_step`` computes in eval mode.

float64 models, so a wrong fold (a missing factor 2 in a tanh, a transposed key projection, a
bias in the wrong half of a GRU gate) shows as a real difference, not as rounding.
"""

import pytest
import torch

from equiv.backbones.seq2seq import EOS, PAD, SOS, Seq2Seq, pad_batch
from equiv.backbones.seq2seq_inference import FrozenDecoder, softmax_last
from equiv.methods.sequence import _reduce_proxy, _sequence_proxy, _step_loss

CELLS = ["rnn", "gru", "lstm"]


def model64(cell: str, attention: bool = True, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(9, 7, hidden=12, cell=cell, attention=attention).double().eval()
    with torch.no_grad():                       # biases away from 0: they must be folded right
        for name, p in model.named_parameters():
            if "bias" in name:
                p.uniform_(-1.0, 1.0)
    return model


@pytest.fixture
def src() -> torch.Tensor:
    return pad_batch([[3, 4, 5], [6, 7, 8, 3, 4, 5], [5], [8, 8, 4, 3]])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", [True, False])
@torch.no_grad()
def test_frozen_step_equals_decode_step(cell, attention, src):
    model = model64(cell, attention)
    frozen = FrozenDecoder(model)
    state = model.encode(src)
    fstate = frozen.prepare(state)
    prev = torch.full((4,), SOS)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        ref, state = model.decode_step(state, prev)
        got, fstate = frozen.step(fstate, prev)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fstate.h, state.h, rtol=1e-10, atol=1e-10)
        prev = torch.randint(3, 7, (4,), generator=gen)     # arbitrary tokens, not the argmax


@pytest.mark.parametrize("cell", CELLS)
@torch.no_grad()
def test_frozen_state_rows_can_be_dropped(cell, src):
    model = model64(cell)
    frozen = FrozenDecoder(model)
    fstate = frozen.prepare(model.encode(src))
    prev = torch.tensor([4, 5, 6, 3])
    full, _ = frozen.step(fstate, prev)
    keep = torch.tensor([3, 1])
    part, _ = frozen.step(fstate.index(keep), prev[keep])
    torch.testing.assert_close(part, full[keep], rtol=1e-12, atol=1e-12)


def test_frozen_decoder_refuses_dropout():
    with pytest.raises(ValueError, match="eval mode"):
        FrozenDecoder(model64("lstm").train())


@pytest.mark.parametrize("cell", CELLS)
@torch.no_grad()
def test_greedy_decode_frozen_matches_module_steps(cell):
    """Whole greedy decodings (float32, many rows, compaction) agree token for token."""
    torch.manual_seed(3)
    model = Seq2Seq(9, 7, hidden=16, cell=cell).eval()
    src = torch.randint(3, 9, (64, 7))
    src[::3, 5:] = PAD
    fast, fast_logits = model.greedy_decode(src, max_len=12, return_logits=True)
    model.use_frozen_decoder = False
    slow, slow_logits = model.greedy_decode(src, max_len=12, return_logits=True)
    assert torch.equal(fast, slow)
    real = torch.ones_like(fast, dtype=torch.bool)
    real[:, 1:] = (fast[:, :-1] != EOS) & (fast[:, :-1] != PAD)
    torch.testing.assert_close(fast_logits[real], slow_logits[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("proxy", ["mean_max_prob", "entropy", "mean_max_prob_padded"])
@torch.no_grad()
def test_scored_decoding_equals_proxy_from_logits(proxy):
    """Summing the step loss during decoding gives the proxy computed from the kept logits."""
    model = model64("lstm")
    src = torch.randint(3, 9, (10, 5))
    tokens, logits = model.greedy_decode(src, max_len=9, return_logits=True)
    expected = _sequence_proxy(logits, tokens, proxy, max_len=9)
    toks2, sums, counts = model.greedy_decode_scored(src, 9, lambda lg: _step_loss(lg, proxy))
    assert torch.equal(toks2, tokens)
    got = _reduce_proxy(sums, counts, proxy, 9, model.out_vocab)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_step_loss_matches_its_definition():
    logits = torch.randn(5, 9, dtype=torch.float64) * 3
    logp = logits.log_softmax(-1)
    torch.testing.assert_close(_step_loss(logits, "mean_max_prob"), -logp.amax(-1).exp())
    torch.testing.assert_close(_step_loss(logits, "entropy"), -(logp.exp() * logp).sum(-1))


def test_softmax_last_with_masked_positions():
    x = torch.randn(4, 1, 9, dtype=torch.float64)
    x[:, :, 6:] = float("-inf")
    torch.testing.assert_close(softmax_last(x.clone()), x.softmax(-1))


@torch.no_grad()
def test_equizero_decodes_identical_views_once(monkeypatch):
    """Rows the group fixes and views equal to other commands are decoded once, with the same
    outputs as decoding every row."""
    from equiv.groups.base import CayleyTable, GroupAction
    from equiv.groups.permutation import LastDimPermutation, TokenPermutation
    from equiv.methods.sequence import EquizeroSeq2Seq

    torch.manual_seed(0)
    model = Seq2Seq(9, 7, hidden=16, cell="lstm").eval()
    swap_in = list(range(9))
    swap_in[3], swap_in[4] = 4, 3
    swap_out = list(range(7))
    swap_out[5], swap_out[6] = 6, 5
    action = GroupAction("swap", CayleyTable(((0, 1), (1, 0))), TokenPermutation(torch.tensor(
        [list(range(9)), swap_in])), LastDimPermutation(torch.tensor([list(range(7)), swap_out])))
    sym = EquizeroSeq2Seq(model, action)
    src = torch.tensor([[3, 5, 6], [4, 5, 6], [5, 6, 7], [3, 3, 8]])  # rows 0/1 swap; 2 is fixed
    decoded_rows = []
    original = model.greedy_decode_scored
    monkeypatch.setattr(model, "greedy_decode_scored",
                        lambda x, *a: decoded_rows.append(x.shape[0]) or original(x, *a))
    deduplicated = sym.decode(src, 10)
    assert decoded_rows == [5]                       # 8 views, 5 distinct
    model.train()
    model.drop.p = 0.0                               # train mode decodes every row
    every_row = sym.decode(src, 10)
    assert decoded_rows == [5, 8]
    assert torch.equal(deduplicated, every_row)


@pytest.mark.parametrize("method", ["equitune", "lambda_equitune"])
@torch.no_grad()
def test_equitune_decoding_uses_the_frozen_step_with_equal_outputs(method, monkeypatch):
    """Equitune/λ-equitune decode step by step through the frozen step in eval mode: the
    combined log-probabilities equal those of the module's own step (float64)."""
    from equiv.experiments.scan.data import load
    from equiv.groups.words import scan_verb4
    from equiv.methods.sequence import build_seq2seq_wrapper

    data = load("add_jump", 0.2, 0, 64)
    torch.manual_seed(0)
    model = Seq2Seq(len(data.in_vocab), len(data.out_vocab), hidden=16).double().eval()
    action = scan_verb4(data.in_vocab, data.out_vocab)
    lam = torch.nn.Linear(16, 1).double() if method == "lambda_equitune" else None
    sym = build_seq2seq_wrapper(model, action, method, lambda_net=lam).eval()
    src = data.test.src[:24]
    frozen_steps = []
    step = FrozenDecoder.step
    monkeypatch.setattr(FrozenDecoder, "step",
                        lambda self, *a: frozen_steps.append(1) or step(self, *a))
    fast_tokens, fast_logp = sym.step_logprobs(src, max_len=20)
    assert frozen_steps                                  # the frozen step did the decoding
    model.use_frozen_decoder = False
    slow_tokens, slow_logp = sym.step_logprobs(src, max_len=20)
    assert torch.equal(fast_tokens, slow_tokens)
    torch.testing.assert_close(fast_logp, slow_logp, rtol=1e-9, atol=1e-9)
