"""The SCAN seq2seq backbone: shapes, padding invariance, step-wise decoding, training works."""


import itertools

import pytest
import torch

from equiv.backbones.seq2seq import EOS, PAD, SOS, Seq2Seq, pad_batch, trim_at_eos

CELLS = ["rnn", "gru", "lstm"]
IN_VOCAB, OUT_VOCAB = 9, 7


def make_model(cell: str, seed: int = 0, **kw) -> Seq2Seq:
    """float64: batched, padded, indexed and compacted paths must agree up to rounding, and in
    float32 that rounding depends on the CPU's kernels (and could flip a near-tie argmax)."""
    torch.manual_seed(seed)
    return Seq2Seq(IN_VOCAB, OUT_VOCAB, hidden=12, cell=cell, **kw).double().eval()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny per-step ops: intra-op threading on a busy 2-core box made backward ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def src() -> torch.Tensor:
    return pad_batch([[3, 4, 5], [6, 7, 8, 3, 4, 5], [5], [8, 8, 4, 3]])


def naive_decode(model: Seq2Seq, src_row: torch.Tensor, max_len: int):
    """Reference: batch of one, no padding, plain loop of decode_step."""
    state = model.encode(src_row[src_row != PAD].unsqueeze(0))
    prev, toks, logits = torch.tensor([SOS]), [], []
    for _ in range(max_len):
        lg, state = model.decode_step(state, prev)
        prev = lg.argmax(1)
        toks.append(int(prev))
        logits.append(lg[0])
        if toks[-1] == EOS:
            break
    return toks, torch.stack(logits)


def test_pad_batch_and_trim():
    assert pad_batch([[1, 2], [3], []]).tolist() == [[1, 2], [3, PAD], [PAD, PAD]]
    assert trim_at_eos(torch.tensor([[4, 5, EOS, PAD], [3, 3, 3, 3]])) == [[4, 5], [3, 3, 3, 3]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("attention", [True, False])
def test_shapes(cell, bidirectional, attention, src):
    model = make_model(cell, bidirectional=bidirectional, attention=attention)
    state = model.encode(src)
    assert state.h.shape == (4, 12) and state.enc.shape == (4, 6, 12)
    assert (state.c is not None) == (cell == "lstm")
    assert state.mask.tolist() == (src != PAD).tolist()
    logits, new = model.decode_step(state, torch.full((4,), SOS))
    assert logits.shape == (4, OUT_VOCAB) and new.h.shape == (4, 12)
    tgt_in = pad_batch([[SOS, 3, 4], [SOS], [SOS, 5], [SOS, 6, 6]])
    assert model(src, tgt_in).shape == (4, 3, OUT_VOCAB)
    toks, lg = model.greedy_decode(src, max_len=7, return_logits=True)
    assert toks.dtype == torch.long and toks.shape[0] == 4 and 1 <= toks.shape[1] <= 7
    assert lg.shape == (*toks.shape, OUT_VOCAB)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_invariance(cell):
    model = make_model(cell)
    alone = pad_batch([[3, 4, 5]])
    batch = pad_batch([[6, 7, 8, 3, 4, 5, 8, 7], [3, 4, 5], [4]])
    s_alone, s_batch = model.encode(alone), model.encode(batch)
    torch.testing.assert_close(s_batch.h[1], s_alone.h[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(s_batch.enc[1, :3], s_alone.enc[0], atol=1e-12, rtol=0)
    t1, l1 = model.greedy_decode(alone, max_len=10, return_logits=True)
    t2, l2 = model.greedy_decode(batch, max_len=10, return_logits=True)
    n = len(naive_decode(model, alone[0], 10)[0])
    assert t2[1, :n].tolist() == t1[0, :n].tolist()
    torch.testing.assert_close(l2[1, :n], l1[0, :n], atol=1e-12, rtol=0)
    tgt_in = pad_batch([[SOS, 3, 4, 5]] * 3)
    torch.testing.assert_close(model(batch, tgt_in)[1], model(alone, tgt_in[:1])[0],
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_matches_naive_loop_and_eos(cell, src):
    model = make_model(cell, seed=1)
    # Bias EOS so that rows finish at different steps and some never finish.
    with torch.no_grad():
        model.out.bias[EOS] += 1.0
    max_len = 8
    toks, logits = model.greedy_decode(src, max_len=max_len, return_logits=True)
    lengths = []
    for i in range(src.shape[0]):
        ref_toks, ref_logits = naive_decode(model, src[i], max_len)
        n = len(ref_toks)
        lengths.append(n)
        assert toks[i, :n].tolist() == ref_toks
        torch.testing.assert_close(logits[i, :n], ref_logits, atol=1e-12, rtol=0)
        assert (toks[i, n:] == PAD).all()
        assert (toks[i, : n - 1] != EOS).all()
    assert toks.shape[1] == max(lengths)  # stops as soon as all rows are done (or max_len)


@pytest.mark.parametrize("cell", CELLS)
def test_eos_then_pad_forced(cell, src):
    model = make_model(cell)
    with torch.no_grad():  # force EOS right away for every row
        model.out.bias[EOS] += 100.0
    toks = model.greedy_decode(src, max_len=5)
    assert toks.tolist() == [[EOS]] * 4
    with torch.no_grad():  # never EOS: runs to max_len
        model.out.bias[EOS] -= 200.0
    assert model.greedy_decode(src, max_len=5).shape == (4, 5)


@pytest.mark.parametrize("cell", CELLS)
def test_state_index(cell, src):
    model = make_model(cell)
    state = model.encode(src)
    idx = torch.tensor([2, 0, 0, 3])
    sub = state.index(idx)
    ref = model.encode(src[idx])
    assert sub.batch_size == 4
    torch.testing.assert_close(sub.h, ref.h, atol=1e-12, rtol=0)
    if cell == "lstm":
        torch.testing.assert_close(sub.c, ref.c, atol=1e-12, rtol=0)
    torch.testing.assert_close(sub.enc, ref.enc, atol=1e-12, rtol=0)
    assert torch.equal(sub.mask, ref.mask)
    prev = torch.tensor([3, 4, 5, 6])
    full_logits, full_next = model.decode_step(state, prev)
    sub_logits, sub_next = model.decode_step(sub, prev[idx])
    torch.testing.assert_close(sub_logits, full_logits[idx], atol=1e-12, rtol=0)
    torch.testing.assert_close(sub_next.h, full_next.index(idx).h, atol=1e-12, rtol=0)
    # dropping rows (e.g. finished ones) also works
    assert state.index(torch.tensor([1])).enc.shape == (1, 6, 12)


def test_empty_source_rejected():
    with pytest.raises(ValueError):
        make_model("gru").encode(pad_batch([[3], []]))


@pytest.mark.parametrize("cell", CELLS)
def test_loss_ignores_pad(cell):
    model = make_model(cell)
    src = pad_batch([[3, 4, 5], [6], [7, 8]])
    tgt = pad_batch([[3, 4, 5, EOS], [6, EOS], [EOS]])
    src_more = torch.cat([src, torch.full((3, 2), PAD)], 1)
    tgt_more = torch.cat([tgt, torch.full((3, 3), PAD)], 1)
    for tf in (0.0, 0.5, 1.0):
        a = model.train_step_loss(src, tgt, tf, torch.Generator().manual_seed(3))
        b = model.train_step_loss(src_more, tgt_more, tf, torch.Generator().manual_seed(3))
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # Full teacher forcing equals token-mean CE of forward() over the non-PAD targets.
    tgt_in = torch.cat([torch.full((3, 1), SOS), tgt[:, :-1]], 1)
    logits = model(src, tgt_in)
    keep = tgt != PAD
    ref = torch.nn.functional.cross_entropy(logits[keep], tgt[keep])
    torch.testing.assert_close(model.train_step_loss(src, tgt, 1.0), ref)
    # Gradient reaches the parameters.
    model.train_step_loss(src, tgt, 0.5).backward()
    assert model.out.weight.grad is not None and model.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cell", CELLS)
def test_loss_with_masks_drawn_in_advance_is_the_per_step_loss(cell):
    """train_step_loss draws the decoder's dropout masks before its loop: the loss and every
    gradient equal, bit for bit, those of the loop in which each step draws its own."""
    src = pad_batch([[3, 4, 5], [6], [7, 8], [8, 3, 4, 6]])
    tgt = pad_batch([[3, 4, 5, EOS], [6, EOS], [EOS], [4, 4, 6, 5, EOS]])

    def per_step(model: Seq2Seq) -> torch.Tensor:
        forced = torch.rand(4, generator=torch.Generator().manual_seed(3)) < 0.5
        state, prev, steps = model.encode(src), torch.full((4,), SOS), []
        for t in range(tgt.shape[1]):
            logits, state = model.decode_step(state, prev)       # dropout draws per step
            steps.append(logits)
            prev = torch.where(forced, tgt[:, t], logits.detach().argmax(1))
        return torch.nn.functional.cross_entropy(torch.stack(steps, 1).flatten(0, 1),
                                                 tgt.flatten(), ignore_index=PAD)

    results = []
    for loss_of in (per_step,
                    lambda m: m.train_step_loss(src, tgt, 0.5, torch.Generator().manual_seed(3))):
        model = make_model(cell, dropout=0.3).train()
        torch.manual_seed(1)
        loss = loss_of(model)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))


def _copy_batch(gen: torch.Generator, n: int):
    lengths = torch.randint(1, 6, (n,), generator=gen).tolist()
    seqs = [torch.randint(3, OUT_VOCAB, (k,), generator=gen).tolist() for k in lengths]
    return pad_batch(seqs), pad_batch([[*s, EOS] for s in seqs]), seqs


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_learns_copy_task(cell):
    torch.manual_seed(0)
    model = Seq2Seq(OUT_VOCAB, OUT_VOCAB, hidden=16, cell=cell, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = 300
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)  # no late wobble
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        src, tgt, _ = _copy_batch(gen, 32)
        loss = model.train_step_loss(src, tgt, 0.5, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    src, _, seqs = _copy_batch(torch.Generator().manual_seed(123), 200)
    with torch.no_grad():
        pred = trim_at_eos(model.greedy_decode(src, max_len=8))
    acc = sum(p == s for p, s in zip(pred, seqs, strict=True)) / len(seqs)
    assert acc >= 0.95, acc


@pytest.mark.parametrize("cell", CELLS)
def test_compacting_decode_equals_the_dense_one(cell):
    """Without gradient, finished rows leave the batch; tokens and the logits up to each row's
    EOS must be exactly those of the dense loop (which runs under autograd)."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 7, (40,), generator=gen).tolist()
    src = pad_batch([torch.randint(3, 9, (n,), generator=gen).tolist() for n in lengths])
    for seed, bias in itertools.product(range(2, 10), torch.linspace(-1, 1, 41).tolist()):
        model = make_model(cell, seed=seed)            # a model and EOS bias giving rows that
        with torch.no_grad():                          # finish at several different steps
            model.out.bias[EOS] += bias
            ends = {int(r.eq(EOS).int().argmax()) if r.eq(EOS).any() else -1
                    for r in model.greedy_decode(src, max_len=12)}
        if len(ends) >= 3:
            break
    assert len(ends) >= 3, ends                             # rows finish at several steps
    dense_toks, dense_logits = model.greedy_decode(src, max_len=12, return_logits=True)
    with torch.no_grad():
        toks, logits = model.greedy_decode(src, max_len=12, return_logits=True)
    assert torch.equal(toks, dense_toks)
    real = torch.ones_like(toks, dtype=torch.bool)
    real[:, 1:] = (toks[:, :-1] != EOS) & (toks[:, :-1] != PAD)
    torch.testing.assert_close(logits[real], dense_logits[real].detach(), atol=1e-12, rtol=0)
