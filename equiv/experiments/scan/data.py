"""SCAN as tensors: one fixed vocabulary for every split, a seeded validation hold-out, padding."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from equiv.backbones.seq2seq import pad_batch
from equiv.data.scan import all_commands, load_split
from equiv.data.vocab import PAD, Vocab

Pair = tuple[str, str]


@dataclass
class Encoded:
    """A set of SCAN pairs as PAD-padded id tensors; targets end with EOS."""

    src: Tensor          # [N, S]
    tgt: Tensor          # [N, T]
    pairs: list[Pair]

    def __len__(self) -> int:
        return self.src.shape[0]

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Rows ``idx``, trimmed to their own longest source and target (no wasted steps)."""
        src, tgt = self.src[idx], self.tgt[idx]
        s = int((src != PAD).sum(1).max())
        t = int((tgt != PAD).sum(1).max())
        return src[:, :s], tgt[:, :t]

    def gold(self) -> list[list[int]]:
        """Target ids without EOS, for exact-match scoring."""
        return [[t for t in row if t != PAD][:-1] for row in self.tgt.tolist()]


@dataclass
class ScanData:
    in_vocab: Vocab
    out_vocab: Vocab
    train: Encoded
    val: Encoded
    test: Encoded

    @property
    def max_target_len(self) -> int:
        return max(d.tgt.shape[1] for d in (self.train, self.val, self.test))


def vocabularies() -> tuple[Vocab, Vocab]:
    """Command and action vocabularies of the whole grammar, in a fixed order.

    Built from all commands rather than from a split's training file (the authors' choice), so
    ids never depend on the split and every group's words exist in every split's vocabulary.
    """
    pairs = all_commands()
    commands = sorted({w for c, _ in pairs for w in c.split()})
    actions = sorted({w for _, a in pairs for w in a.split()})
    return Vocab(commands), Vocab(actions)


def encode(pairs: list[Pair], in_vocab: Vocab, out_vocab: Vocab) -> Encoded:
    src = pad_batch([in_vocab.encode(c, eos=False) for c, _ in pairs])
    tgt = pad_batch([out_vocab.encode(a) for _, a in pairs])
    return Encoded(src, tgt, list(pairs))


def load(split: str, validation_fraction: float, split_seed: int,
         eval_limit: int | None = None) -> ScanData:
    """Train / validation / test of a SCAN split; validation is a seeded share of train.

    ``eval_limit`` keeps only the first N validation and test commands (quick tests).
    """
    train, test = load_split(split)
    random.Random(split_seed).shuffle(train)
    n_val = round(validation_fraction * len(train))
    val, train = train[:n_val], train[n_val:]
    if eval_limit is not None:
        val, test = val[:eval_limit], test[:eval_limit]
    iv, ov = vocabularies()
    return ScanData(iv, ov, encode(train, iv, ov), encode(val, iv, ov), encode(test, iv, ov))


def by_source_length(src: Tensor) -> Tensor:
    """Row order by source length: evaluation batches of similar length decode fewer steps."""
    return torch.argsort((src != PAD).sum(1), stable=True)
