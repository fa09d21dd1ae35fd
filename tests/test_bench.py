"""scripts/bench.py: ``--only`` replaces its own sections and keeps the others."""

from scripts.bench import merge, sections_of
from scripts.benchmarks.common import Section

OLD = """# Benchmarks

- machine: old

## A: first

| x |
|---|
| 1 |

### a subsection stays with A

## B: second

text of B
"""


def test_merge_replaces_only_rerun_sections():
    text = merge(OLD, [Section("B: second", settings=["new B"]), Section("C: third")])
    sections = sections_of(text)
    assert list(sections) == ["A: first", "B: second", "C: third"]
    assert "### a subsection stays with A" in sections["A: first"]
    assert "new B" in sections["B: second"] and "text of B" not in text
    assert "- machine: old" not in text                      # the header is rewritten


def test_first_run_writes_only_its_sections():
    assert list(sections_of(merge("", [Section("A: first")]))) == ["A: first"]
