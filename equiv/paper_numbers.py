"""The paper's numbers (``equiv/data/paper_numbers.csv``), for the tables and the figures.

Standard library only, so the scripts that read it never wait for torch.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

PAPER_FILE = Path(__file__).parent / "data" / "paper_numbers.csv"


def load_paper(path: Path = PAPER_FILE) -> list[dict[str, str]]:
    """Rows of the paper-numbers file, each with ``text``: the value as a fraction with the
    printed precision (percentages are divided by 100 exactly), ``≈`` when pixel-read."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        value = Decimal(row["value"])
        if row["unit"] == "percent":
            value = value.scaleb(-2)
        elif row["unit"] != "fraction":
            raise ValueError(f"{path}: unknown unit {row['unit']!r}")
        row["text"] = ("≈" if "pixel-read" in row["source"] else "") + f"{value:f}"
    return rows
