"""Exact-match accuracy of batched greedy decoding, and an equivariance probe."""

from __future__ import annotations

import torch
from torch import Tensor

from equiv.backbones.seq2seq import PAD, trim_at_eos
from equiv.experiments.scan.data import Encoded, by_source_length
from equiv.methods.sequence import SymmetrizedSeq2Seq


@torch.no_grad()
def decode_all(model: SymmetrizedSeq2Seq, src: Tensor, batch_size: int, max_len: int,
               device: torch.device) -> list[list[int]]:
    """Decoded ids (without EOS) for every row of ``src``, in the original order.

    Rows are decoded in batches of similar source length, each batch (all |G| views of it) in
    one call; the mode of the model (train/eval) is left to the caller.
    """
    order = by_source_length(src)
    out: list[list[int]] = [[] for _ in range(src.shape[0])]
    for rows in length_batches(src, order, batch_size):
        part = src[rows]
        part = part[:, : int((part != PAD).sum(1).max())].to(device)
        for row, seq in zip(rows.tolist(), trim_at_eos(model.decode(part, max_len).cpu()),
                            strict=True):
            out[row] = seq
    return out


def length_batches(src: Tensor, order: Tensor, batch_size: int) -> list[Tensor]:
    """Consecutive chunks of ``order`` (rows sorted by source length) of at most ``batch_size``
    rows that never mix source lengths: unpadded batches encode without packing."""
    lengths = (src[order] != PAD).sum(1)
    batches = []
    counts = torch.unique_consecutive(lengths, return_counts=True)[1].tolist()
    for run in torch.split(order, counts):
        batches.extend(torch.split(run, batch_size))
    return batches


def exact_match(model: SymmetrizedSeq2Seq, data: Encoded, batch_size: int, max_len: int,
                device: torch.device) -> float:
    """Share of commands whose whole decoded action sequence equals the gold one."""
    was_training = model.training
    model.eval()
    try:
        decoded = decode_all(model, data.src, batch_size, max_len, device)
    finally:
        model.train(was_training)
    gold = data.gold()
    return sum(d == g for d, g in zip(decoded, gold, strict=True)) / max(1, len(gold))


def equivariance_agreement(model: SymmetrizedSeq2Seq, src: Tensor, element: int,
                           batch_size: int, max_len: int, device: torch.device) -> float:
    """Share of commands ``x`` with ``decode(g·x) == g·decode(x)`` up to EOS, for one ``g``.

    1.0 for every equivariant method (up to equizero ties); for the plain model it measures how
    far from equivariant the pretrained network is.
    """
    was_training = model.training
    model.eval()
    try:
        g = torch.full((src.shape[0],), element, dtype=torch.long)
        plain = decode_all(model, src, batch_size, max_len, device)
        moved = decode_all(model, model.action.act_in(src, g), batch_size, max_len, device)
    finally:
        model.train(was_training)
    sigma = model.out_tokens.table[element].tolist()            # token t -> g·t
    agree = sum([sigma[t] for t in p] == m for p, m in zip(plain, moved, strict=True))
    return agree / max(1, len(plain))
