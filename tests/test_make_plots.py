"""Figures from synthetic results.json files: aggregated values, exclusions, determinism, CLI."""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from pathlib import Path

import pytest

from equiv.aggregate import load_runs
from equiv.results import write_results

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_plots.py"
_spec = importlib.util.spec_from_file_location("make_plots", SCRIPT)
make_plots = importlib.util.module_from_spec(_spec)
sys.modules["make_plots"] = make_plots        # dataclasses look their module up
_spec.loader.exec_module(make_plots)

STEPS = (0, 400, 800)
NAME = "scan_finetune_curve"


def fake_run(root: Path, backbone: str, method: str, seed: int, values, steps=STEPS,
             pretrained: bool = True, task: str = "scan_add_jump", group: str = "scan_verb",
             status: str = "complete") -> None:
    """A results.json with the fields make_plots reads; ``values`` is test_acc at ``steps``."""
    curve = [{"step": s, "value": v} for s, v in zip(steps, values, strict=True)]
    data = {"status": status, "task": task, "method": method, "backbone": backbone,
            "group": group, "seed": seed, "pretrained": pretrained,
            "metrics": {"test_acc": values[-1]},
            "curves": {"test_acc": curve, "val_acc": curve}}
    write_results(root / task / method / backbone / f"pretrained={pretrained}" / f"seed={seed}",
                  data)


def scan_runs(root: Path) -> Path:
    fake_run(root, "seq2seq_lstm", "equizero", 0, [0.25, 0.5, 0.75])
    fake_run(root, "seq2seq_lstm", "equizero", 1, [0.75, 1.0, 0.25])
    fake_run(root, "seq2seq_lstm", "equizero", 2, [9.0, 9.0, 9.0], pretrained=False)  # excluded
    fake_run(root, "seq2seq_lstm", "equizero", 3, [9.0, 9.0, 9.0], status="running")  # ignored
    fake_run(root, "seq2seq_lstm", "vanilla", 0, [9.0, 9.0, 9.0])          # not in this figure
    fake_run(root, "seq2seq_gru", "equitune", 0, [0.125, 0.375, 0.625])
    return root


def stats_rows(stats) -> list[tuple]:
    return [tuple(row) for row in stats[["backbone", "method", "step", "n"]].itertuples(
        index=False)]


def test_curve_stats_values_and_exclusions(tmp_path):
    runs = load_runs(scan_runs(tmp_path / "runs"))
    stats = make_plots.curve_stats(runs, "test_acc", ("equizero", "equitune"))
    assert list(stats.columns) == ["backbone", "method", "step", "mean", "std", "n"]
    assert stats_rows(stats) == [("seq2seq_gru", "equitune", s, 1) for s in STEPS] + [
        ("seq2seq_lstm", "equizero", s, 2) for s in STEPS]
    gru = stats[stats["backbone"] == "seq2seq_gru"]
    assert gru["mean"].tolist() == [0.125, 0.375, 0.625]
    assert gru["std"].isna().all()                                   # one seed: no band
    lstm = stats[stats["backbone"] == "seq2seq_lstm"]
    assert lstm["mean"].tolist() == [0.5, 0.75, 0.5]                 # pretrained=false left out
    half_diff = math.sqrt(0.125)                                     # ddof=1 std of {a, a ± 0.5}
    assert lstm["std"].tolist() == pytest.approx([half_diff] * 3, rel=1e-12)
    with_vanilla = make_plots.curve_stats(runs, "test_acc")
    assert ("seq2seq_lstm", "vanilla", 0, 1) in stats_rows(with_vanilla)


def test_curve_stats_aligns_mismatched_steps(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "seq2seq_rnn", "equizero", 0, [0.5, 0.25, 0.5], steps=(0, 400, 800))
    fake_run(root, "seq2seq_rnn", "equizero", 1, [0.25, 0.75], steps=(0, 800))   # no step 400
    fake_run(root, "seq2seq_rnn", "equizero", 2, [0.75, 0.25, None], steps=(0, 800, 1200))
    fake_run(root, "seq2seq_rnn", "equitune", 0, [0.5, 0.75], steps=(400, 0))     # unsorted
    stats = make_plots.curve_stats(load_runs(root), "test_acc")
    assert stats_rows(stats) == [("seq2seq_rnn", "equitune", 0, 1),
                                 ("seq2seq_rnn", "equitune", 400, 1),
                                 ("seq2seq_rnn", "equizero", 0, 3),
                                 ("seq2seq_rnn", "equizero", 800, 3)]
    assert stats["mean"].tolist() == [0.75, 0.5, 0.5, 0.5]


def test_main_writes_byte_identical_figures(tmp_path, capsys):
    runs, out = scan_runs(tmp_path / "runs"), tmp_path / "figures"
    assert make_plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    png, pdf = out / f"{NAME}.png", out / f"{NAME}.pdf"
    assert capsys.readouterr().out.splitlines() == [f"wrote {png} and {pdf}"]
    first = png.read_bytes(), pdf.read_bytes()
    assert first[0].startswith(b"\x89PNG") and first[1].startswith(b"%PDF")
    assert b"CreationDate" not in first[1]
    png.unlink()
    pdf.unlink()
    assert make_plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    assert (png.read_bytes(), pdf.read_bytes()) == first


def test_missing_task_is_skipped_with_a_note(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "figures"
    fake_run(root, "small_cnn", "equizero", 0, [0.5, 0.5, 0.5], task="digits_rot90")
    fake_run(root, "seq2seq_lstm", "equizero", 0, [0.5, 0.5, 0.5], pretrained=False)
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"skipped {NAME}: no pretrained runs for task scan_add_jump"]
    assert not (out / f"{NAME}.png").exists() and not (out / f"{NAME}.pdf").exists()


def test_duplicate_seeds_are_skipped_not_averaged(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "figures"
    for group in ("scan_verb", "scan_verb4"):
        fake_run(root / group, "seq2seq_gru", "equizero", 0, [0.5, 0.5, 0.5], group=group)
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    note = capsys.readouterr().out
    assert note.startswith(f"skipped {NAME}: several runs for one seed (seq2seq_gru equizero 0)")
    assert not (out / f"{NAME}.png").exists()


@pytest.mark.parametrize("make_dir", [False, True])
def test_bad_runs_directory_exits_2(tmp_path, capsys, make_dir):
    runs = tmp_path / "runs"
    if make_dir:                                  # exists, but holds only an unfinished run
        fake_run(runs, "seq2seq_lstm", "equizero", 0, [0.5, 0.5, 0.5], status="running")
    assert make_plots.main(["--runs", str(runs), "--out", str(tmp_path / "figures")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "figures").exists()


def test_script_imports_no_torch():
    """Figures must not wait ~20 s for torch: only the standard library, pandas, matplotlib."""
    tree = ast.parse(SCRIPT.read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    third_party = {m for m in modules if m.split(".")[0] not in {
        "__future__", "argparse", "sys", "collections", "dataclasses", "pathlib", "typing",
        "json"}}
    assert third_party == {"matplotlib", "matplotlib.style", "matplotlib.figure", "pandas",
                           "equiv.aggregate"}
