"""What view selection can reach on SCAN: the group's view ceiling and an oracle selector.

Every symmetrizer here answers a test command ``x`` from its views ``g·x``. The pretrained model
handles commands of its training distribution (the split's training file: the commands it was
trained on and the validation commands held out from them, which it decodes almost as well), so
a command helps only if one of its views lies there. The *view ceiling* is the share of test
commands with such a view; the *oracle* decodes those in-training views with the pretrained
model, maps each result back by ``g⁻¹`` and counts a command as solved if one of them is right
(commands without an in-training view count as wrong, so oracle <= ceiling). It is an upper
reference for any selector that picks in-distribution views.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equiv.data.scan import load_split
from equiv.data.vocab import PAD, Vocab
from equiv.experiments.scan.data import Encoded
from equiv.experiments.scan.evaluate import decode_all
from equiv.groups import GroupAction

Command = tuple[int, ...]


def command_ids(commands: list[str], in_vocab: Vocab) -> set[Command]:
    """Commands as token-id tuples (no EOS, no padding), for membership tests."""
    return {tuple(in_vocab.encode(c, eos=False)) for c in commands}


def training_file_commands(split: str, in_vocab: Vocab) -> set[Command]:
    """The split's whole training file (training part and validation hold-out)."""
    return command_ids([c for c, _ in load_split(split)[0]], in_vocab)


def in_training_views(src: Tensor, action: GroupAction, known: set[Command]) -> Tensor:
    """``[|G|, B]`` bool: ``hits[g, b]`` says whether the view ``g·x_b`` is a known command."""
    hits = torch.zeros(action.order, src.shape[0], dtype=torch.bool)
    for g in action.elements:
        rows = action.act_in(src, g).tolist()
        hits[g] = torch.tensor([tuple(t for t in row if t != PAD) in known for row in rows],
                               dtype=torch.bool)
    return hits


def view_ceiling(hits: Tensor) -> float:
    """Share of commands with at least one known view."""
    return float(hits.any(dim=0).double().mean()) if hits.shape[1] else 0.0


@torch.no_grad()
def oracle_exact_match(decoder: nn.Module, action: GroupAction, data: Encoded, hits: Tensor,
                       batch_size: int, max_len: int, device: torch.device) -> float:
    """Share of ``data`` solved by decoding an in-training view ``g·x`` and mapping it back.

    ``decoder`` is the plain (unsymmetrized) model: ``decoder.decode(src, max_len)``. Each
    command counts once, as solved if any of its in-training views decodes, after ``g⁻¹``, to
    the gold actions.
    """
    elements, rows = hits.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return 0.0
    was_training = decoder.training
    decoder.eval()
    try:
        decoded = decode_all(decoder, action.act_in(data.src[rows], elements), batch_size,
                             max_len, device)
    finally:
        decoder.train(was_training)
    back = action.rep_out.table[action.inverse(elements)].tolist()    # token t -> g⁻¹·t
    gold = data.gold()
    solved = {row for row, seq, sigma in zip(rows.tolist(), decoded, back, strict=True)
              if [sigma[t] for t in seq] == gold[row]}
    return len(solved) / len(data)
