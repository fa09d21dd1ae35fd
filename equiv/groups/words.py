"""Groups that permute words: cycles given as words, turned into token-id cycles by vocabularies.

SCAN's symmetries swap or cycle verbs and directions in the command and the matching actions in
the output (Gordon et al. 2020; Basu et al. 2023). The vocabularies come from the task's data,
so a config names these factories with ``_partial_: true`` and the protocol supplies them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from equiv.data.vocab import Vocab
from equiv.groups import GroupAction, permutation
from equiv.groups.permutation import LastDimPermutation, TokenPermutation, cyclic_table

WordCycles = Sequence[Sequence[str]]


def identity_word_action(in_size: int, out_size: int) -> GroupAction:
    """The trivial group as a (identity) permutation of both vocabularies, so a plain model can
    run through the same sequence machinery as the symmetrized ones."""
    return GroupAction("trivial", cyclic_table(1),
                       TokenPermutation(torch.arange(in_size).unsqueeze(0)),
                       LastDimPermutation(torch.arange(out_size).unsqueeze(0)))


def word_permutation(in_cycles: WordCycles, out_cycles: WordCycles, in_vocab: Vocab,
                     out_vocab: Vocab, name: str = "word_permutation") -> GroupAction:
    """The cyclic group of ``in_cycles`` on input token ids and ``out_cycles`` on
    output-vocabulary scores."""
    action = permutation(in_cycles=[in_vocab.ids(c) for c in in_cycles], in_size=len(in_vocab),
                         out_cycles=[out_vocab.ids(c) for c in out_cycles],
                         out_size=len(out_vocab))
    action.name = name
    return action


def scan_verb(in_vocab: Vocab, out_vocab: Vocab) -> GroupAction:
    """jump↔run on command words, I_JUMP↔I_RUN on actions (the paper's Add Jump group)."""
    return word_permutation([["jump", "run"]], [["I_JUMP", "I_RUN"]], in_vocab, out_vocab,
                            "scan_verb")


def scan_direction(in_vocab: Vocab, out_vocab: Vocab) -> GroupAction:
    """left↔right on command words, I_TURN_LEFT↔I_TURN_RIGHT on actions (Around Right)."""
    return word_permutation([["left", "right"]], [["I_TURN_LEFT", "I_TURN_RIGHT"]], in_vocab,
                            out_vocab, "scan_direction")


def scan_verb4(in_vocab: Vocab, out_vocab: Vocab) -> GroupAction:
    """Beyond the paper: the four verbs cycled (order 4, not an involution)."""
    return word_permutation([["jump", "run", "walk", "look"]],
                            [["I_JUMP", "I_RUN", "I_WALK", "I_LOOK"]], in_vocab, out_vocab,
                            "scan_verb4")
