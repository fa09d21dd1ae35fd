"""Vocabularies and word-permutation groups (SCAN's verb and direction symmetries)."""

import pytest
import torch

from equiv.data.scan import all_commands, interpret
from equiv.data.vocab import EOS, PAD, SOS, Vocab
from equiv.groups import words
from equiv.groups.words import scan_verb4

IN = Vocab(w for c, _ in all_commands() for w in c.split())
OUT = Vocab(w for _, a in all_commands() for w in a.split())


def test_vocab_roundtrip_and_specials():
    assert (PAD, SOS, EOS) == (0, 1, 2) and len(IN) == 3 + 13 and len(OUT) == 3 + 6
    ids = IN.encode("jump around left twice")
    assert ids[-1] == EOS and IN.decode(ids) == "jump around left twice"
    assert IN.decode([*IN.ids(["walk"]), EOS, *IN.ids(["run"])]) == "walk"
    with pytest.raises(KeyError, match="'fly' is not in the vocabulary"):
        IN.ids(["fly"])


@pytest.mark.parametrize("name", ["scan_direction", "scan_verb", "scan_verb4"])
def test_word_groups_are_symmetries_of_scan(name):
    """interpret(g·command) == g·interpret(command) for every command and every g."""
    act = getattr(words, name)(IN, OUT)
    assert act.order == (4 if name == "scan_verb4" else 2)
    commands = all_commands()[::37]
    cmd = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(IN.encode(c)) for c, _ in commands], batch_first=True)
    for g in act.elements:
        moved = act.act_in(cmd, g)
        onehot = torch.nn.functional.one_hot(
            torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(OUT.encode(a)) for _, a in commands], batch_first=True), len(OUT))
        moved_out = act.act_out(onehot.double(), g).argmax(-1)
        for row, out_row in zip(moved, moved_out, strict=True):
            assert OUT.decode(out_row.tolist()) == interpret(IN.decode(row.tolist()))


def test_scan_verb4_is_not_an_involution():
    act = scan_verb4(IN, OUT)
    jump = torch.tensor([IN.ids(["jump"])])
    assert IN.decode(act.act_in(jump, 1)[0].tolist()) == "run"
    assert IN.decode(act.act_in(jump, act.inverse(1))[0].tolist()) == "look"
