"""Groups that permute words: cycles given as words, turned into token-id cycles by vocabularies.

SCAN's symmetries swap or cycle verbs and directions in the command and the matching actions in
the output (Gordon et al. 2020; Basu et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from equiv.data.vocab import Vocab
from equiv.groups import GroupAction, make_action
from equiv.groups.permutation import LastDimPermutation, TokenPermutation, cyclic_table

WordCycles = Sequence[Sequence[str]]

# name: (cycles on command words, matching cycles on output actions)
WORD_GROUPS: dict[str, tuple[WordCycles, WordCycles]] = {
    "scan_verb": ([["jump", "run"]], [["I_JUMP", "I_RUN"]]),
    "scan_direction": ([["left", "right"]], [["I_TURN_LEFT", "I_TURN_RIGHT"]]),
    # Beyond the paper: all four verbs, cyclic of order 4 (non-involutive).
    "scan_verb4": ([["jump", "run", "walk", "look"]], [["I_JUMP", "I_RUN", "I_WALK", "I_LOOK"]]),
}


def identity_word_action(in_size: int, out_size: int) -> GroupAction:
    """The trivial group as a (identity) permutation of both vocabularies, so a plain model can
    run through the same sequence machinery as the symmetrized ones."""
    return GroupAction("trivial", cyclic_table(1),
                       TokenPermutation(torch.arange(in_size).unsqueeze(0)),
                       LastDimPermutation(torch.arange(out_size).unsqueeze(0)))


def word_action(name: str, in_vocab: Vocab, out_vocab: Vocab,
                in_cycles: WordCycles | None = None,
                out_cycles: WordCycles | None = None) -> GroupAction:
    """A cyclic group acting on input token ids and on output-vocabulary scores.

    ``in_cycles``/``out_cycles`` default to the named group's in ``WORD_GROUPS``; ``trivial``
    is the identity.
    """
    if name == "trivial":
        return identity_word_action(len(in_vocab), len(out_vocab))
    if in_cycles is None or out_cycles is None:
        if name not in WORD_GROUPS:
            raise ValueError(f"unknown word group {name!r}; valid: {', '.join(WORD_GROUPS)}")
        in_cycles, out_cycles = WORD_GROUPS[name]
    action = make_action("permutation", in_cycles=[in_vocab.ids(c) for c in in_cycles],
                         in_size=len(in_vocab), out_cycles=[out_vocab.ids(c) for c in out_cycles],
                         out_size=len(out_vocab))
    action.name = name
    return action
