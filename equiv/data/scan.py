"""SCAN (Lake & Baroni, 2018), generated from its grammar instead of read from disk.

SCAN pairs navigation commands (``jump around left twice and walk``) with action sequences
(``I_TURN_LEFT I_JUMP ... I_WALK``). The grammar is small and finite (20,910 commands), so the
whole dataset and its standard splits are rebuilt here in a few milliseconds: the library needs
no data files, and the tests check the result against the official release line by line.

Grammar (the paper's Figure, in words)::

    C -> S | S and S | S after S
    S -> V | V twice | V thrice
    V -> U | U D | U opposite D | U around D | turn D | turn opposite D | turn around D
    U -> walk | look | run | jump          D -> left | right

Meaning: ``U`` is its action (``I_WALK`` ...), ``turn`` is no action; ``D`` prefixes a turn
(``I_TURN_LEFT``/``I_TURN_RIGHT``), ``opposite D`` two turns, ``around D`` repeats
"turn, act" four times; ``twice``/``thrice`` repeat; ``x and y`` is x then y, ``x after y`` is y
then x.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache

__all__ = ["SPLITS", "all_commands", "interpret", "load_split"]

Pair = tuple[str, str]

SPLITS = ("simple", "add_jump", "around_right", "length")

_ACTIONS = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
_TURNS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
_REPEATS = {"": 1, "twice": 2, "thrice": 3}
_CONJUNCTIONS = ("and", "after")

# Official sizes the splits are built to match (see tests/test_data_scan.py).
_SIMPLE_TEST_SIZE = 4182  # 20% of 20,910, the size of the official tasks_test_simple.txt
_JUMP_COPIES = 1467  # times the primitive `jump` appears in tasks_train_addprim_jump.txt
_MAX_TRAIN_LENGTH = 22  # longest action sequence in tasks_train_length.txt


def _verb_phrases() -> list[tuple[str, list[str]]]:
    """Every ``V`` with its actions: verbs walk, look, run, jump, turn; then the modifiers."""
    out: list[tuple[str, list[str]]] = []
    for verb in (*_ACTIONS, "turn"):
        act = [_ACTIONS[verb]] if verb in _ACTIONS else []
        if act:
            out.append((verb, act))
        for side, turn in _TURNS.items():
            out.append((f"{verb} {side}", [turn, *act]))
            out.append((f"{verb} opposite {side}", [turn, turn, *act]))
            out.append((f"{verb} around {side}", [turn, *act] * 4))
    return out


@lru_cache(maxsize=1)
def _phrases() -> dict[str, str]:
    """Every ``S`` (a ``V`` optionally repeated) mapped to its space-separated actions."""
    table: dict[str, str] = {}
    for verb, actions in _verb_phrases():
        for word, times in _REPEATS.items():
            table[f"{verb} {word}" if word else verb] = " ".join(actions * times)
    return table


@lru_cache(maxsize=1)
def _all_pairs() -> tuple[Pair, ...]:
    phrases = list(_phrases().items())
    pairs: list[Pair] = list(phrases)
    for conj in _CONJUNCTIONS:
        for first, first_out in phrases:
            for second, second_out in phrases:
                out = f"{first_out} {second_out}" if conj == "and" else f"{second_out} {first_out}"
                pairs.append((f"{first} {conj} {second}", out))
    return tuple(pairs)


def all_commands() -> list[Pair]:
    """All 20,910 SCAN ``(command, actions)`` pairs, each command once.

    Order: the 102 single phrases ``S`` first, then every ``S1 and S2``, then every
    ``S1 after S2`` (pairs in phrase order, the second phrase varying fastest). Phrases run over
    the verbs walk, look, run, jump, turn; within a verb: bare, left, opposite left, around left,
    right, opposite right, around right; each bare, twice, thrice.
    """
    return list(_all_pairs())


def _interpret_phrase(words: list[str], command: str) -> str:
    actions = _phrases().get(" ".join(words))
    if actions is None:
        raise ValueError(f"not a SCAN command: {command!r} ({' '.join(words)!r} is not a phrase)")
    return actions


def interpret(command: str) -> str:
    """The action sequence of ``command`` (space-separated ``I_*`` tokens).

    The command must be in SCAN's grammar exactly as the dataset writes it: lowercase words
    separated by single spaces. Anything else raises ValueError rather than guessing.
    """
    if not isinstance(command, str):
        raise ValueError(f"a SCAN command is a string, got {type(command).__name__}")
    words = command.split(" ")
    cuts = [i for i, word in enumerate(words) if word in _CONJUNCTIONS]
    if not cuts:
        return _interpret_phrase(words, command)
    if len(cuts) > 1:
        raise ValueError(f"not a SCAN command: {command!r} (at most one 'and'/'after')")
    cut = cuts[0]
    first = _interpret_phrase(words[:cut], command)
    second = _interpret_phrase(words[cut + 1:], command)
    return f"{first} {second}" if words[cut] == "and" else f"{second} {first}"


def _partition(
    in_train: Callable[[Pair], bool], in_test: Callable[[Pair], bool]
) -> tuple[list[Pair], list[Pair]]:
    pairs = _all_pairs()
    return ([p for p in pairs if in_train(p)], [p for p in pairs if in_test(p)])


@lru_cache(maxsize=16)
def _split(name: str, seed: int) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
    pairs = _all_pairs()
    if name == "simple":
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        held_out = set(order[:_SIMPLE_TEST_SIZE])
        train = [p for i, p in enumerate(pairs) if i not in held_out]
        test = [pairs[i] for i in sorted(held_out)]
    elif name == "add_jump":
        primitive = ("jump", interpret("jump"))
        has_jump = lambda p: "jump" in p[0].split(" ")  # noqa: E731
        train, test = _partition(
            lambda p: not has_jump(p), lambda p: has_jump(p) and p != primitive
        )
        train += [primitive] * _JUMP_COPIES
    elif name == "around_right":
        # Held out: the template "<action> around right". Commands with "turn around right"
        # contain the template's words, so they cannot be trained on, yet they are not the
        # template applied to an action: the official release puts them in neither split.
        train, test = _partition(
            lambda p: "around right" not in p[0],
            lambda p: "around right" in p[0] and "turn around right" not in p[0],
        )
    elif name == "length":
        short = lambda p: p[1].count(" ") + 1 <= _MAX_TRAIN_LENGTH  # noqa: E731
        train, test = _partition(short, lambda p: not short(p))
    else:
        raise ValueError(f"unknown SCAN split {name!r}; valid names: {', '.join(SPLITS)}")
    return tuple(train), tuple(test)


def load_split(name: str, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """``(train, test)`` lists of ``(command, actions)`` for one of the standard SCAN splits.

    - ``simple``: a random 80/20 split (16,728 / 4,182) fixed by ``seed``; the official split is
      also random, so only its sizes are reproduced, not its membership.
    - ``add_jump``: train is every command without "jump" plus the bare ``jump`` 1,467 times
      (as in the official file, about 10% of train); test is every other command with "jump".
    - ``around_right``: train has no "around right"; test has "around right" but not
      "turn around right"; the 1,209 commands containing "turn around right" are in neither.
    - ``length``: train has action sequences of at most 22 actions, test the longer ones.

    ``seed`` only affects ``simple``. Both lists follow :func:`all_commands` order (for
    ``add_jump`` the 1,467 extra ``jump`` copies come after the other training commands); shuffle
    them yourself for training. The returned lists are fresh copies, safe to modify.
    """
    train, test = _split(name, int(seed))
    return list(train), list(test)
