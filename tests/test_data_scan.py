"""SCAN generated from its grammar: identical to the official release, splits included."""

from collections import Counter
from pathlib import Path

import pytest

from equiv.data.scan import SPLITS, all_commands, interpret, load_split

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scan"
FILES = {
    "simple": "simple",
    "add_jump": "addprim_jump",
    "around_right": "template_around_right",
    "length": "length",
}

needs_official = pytest.mark.skipif(
    not (OFFICIAL / "tasks.txt").is_file(), reason=f"official SCAN release not found at {OFFICIAL}"
)


def read_official(filename: str) -> list[tuple[str, str]]:
    pairs = []
    for line in (OFFICIAL / filename).read_text().splitlines():
        if not line.strip():
            continue
        assert line.startswith("IN: ") and " OUT: " in line, line
        command, actions = line[len("IN: "):].split(" OUT: ")
        pairs.append((command.strip(), actions.strip()))
    return pairs


def official_split(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return (read_official(f"tasks_train_{FILES[name]}.txt"),
            read_official(f"tasks_test_{FILES[name]}.txt"))


@pytest.mark.parametrize(
    ("command", "actions"),
    [
        ("jump", "I_JUMP"),
        ("turn left", "I_TURN_LEFT"),
        ("walk opposite left", "I_TURN_LEFT I_TURN_LEFT I_WALK"),
        ("run around right", " ".join(["I_TURN_RIGHT I_RUN"] * 4)),
        ("look twice after jump", "I_JUMP I_LOOK I_LOOK"),
        ("turn around left", " ".join(["I_TURN_LEFT"] * 4)),
        ("turn opposite right thrice", " ".join(["I_TURN_RIGHT"] * 6)),
        ("jump opposite left and walk thrice",
         "I_TURN_LEFT I_TURN_LEFT I_JUMP I_WALK I_WALK I_WALK"),
    ],
)
def test_interpret_examples(command, actions):
    assert interpret(command) == actions


@pytest.mark.parametrize(
    "command",
    ["", "turn", "jump jump", "walk left twice thrice", "jump and", "after walk",
     "walk and run after jump", "Jump", "jump  twice", "jump twice ", "fly", "turn around"],
)
def test_commands_outside_the_grammar_are_rejected(command):
    with pytest.raises(ValueError, match="not a SCAN command"):
        interpret(command)


def test_all_commands_is_complete_unique_and_consistent_with_interpret():
    pairs = all_commands()
    assert len(pairs) == 20910 and len({c for c, _ in pairs}) == 20910
    assert all(interpret(c) == a for c, a in pairs)
    assert pairs == all_commands()  # deterministic order
    assert max(len(a.split()) for _, a in pairs) == 48


@needs_official
def test_all_commands_equal_the_official_tasks():
    official = read_official("tasks.txt")
    assert Counter(all_commands()) == Counter(official)
    assert all(interpret(c) == a for c, a in official)


@needs_official
@pytest.mark.parametrize("name", ["add_jump", "around_right", "length"])
def test_deterministic_splits_equal_the_official_files(name):
    train, test = load_split(name)
    official_train, official_test = official_split(name)
    assert Counter(train) == Counter(official_train)
    assert Counter(test) == Counter(official_test)


@needs_official
def test_simple_split_matches_the_official_sizes_and_lines():
    train, test = load_split("simple")
    official_train, official_test = official_split("simple")
    assert (len(train), len(test)) == (len(official_train), len(official_test)) == (16728, 4182)
    assert not set(train) & set(test)
    assert Counter(train + test) == Counter(all_commands())
    assert all(interpret(c) == a for c, a in official_train + official_test)


def test_split_sizes_and_rules():
    sizes = {"simple": (16728, 4182), "add_jump": (14670, 7706),
             "around_right": (15225, 4476), "length": (16990, 3920)}
    for name in SPLITS:
        train, test = load_split(name)
        assert (len(train), len(test)) == sizes[name]
    train, test = load_split("add_jump")
    assert Counter(train)[("jump", "I_JUMP")] == 1467
    assert all("jump" not in c.split() for c, _ in train if c != "jump")
    assert all("jump" in c.split() and c != "jump" for c, _ in test)
    train, test = load_split("around_right")
    neither = set(all_commands()) - set(train) - set(test)
    assert len(neither) == 1209 and all("turn around right" in c for c, _ in neither)
    assert ("jump around right and turn around right", interpret(
        "jump around right and turn around right")) in neither
    train, test = load_split("length")
    assert max(len(a.split()) for _, a in train) == 22 < min(len(a.split()) for _, a in test)


def test_simple_split_depends_only_on_its_seed():
    a, b, c = load_split("simple", 0), load_split("simple", 0), load_split("simple", 1)
    assert a == b and a != c
    assert len(c[1]) == 4182 and Counter(c[0] + c[1]) == Counter(all_commands())


def test_returned_lists_are_fresh_copies():
    train, _ = load_split("length")
    train.clear()
    assert len(load_split("length")[0]) == 16990
    all_commands().clear()
    assert len(all_commands()) == 20910


def test_unknown_split_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match="simple, add_jump, around_right, length"):
        load_split("addprim_turn_left")
