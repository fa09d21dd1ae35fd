"""Tables from synthetic results.json files: means, stds, exclusions, determinism."""

import subprocess
import sys

from equiv.results import write_results
from tests.helpers import ROOT


def fake_run(root, method, seed, zeroshot, finetuned, pretrained=True, status="complete"):
    run_dir = root / "digits_rot90" / method / "default" / f"seed={seed}"
    data = {"status": status, "task": "digits_rot90", "method": method, "backbone": "small_cnn",
            "group": "rot90", "seed": seed, "pretrained": pretrained,
            "config": {"task": {"family": "image_classification"}},
            "metrics": {"upright_accuracy": 0.98, "zeroshot_accuracy": zeroshot,
                        "finetuned_accuracy": finetuned, "finetuned_invariance_error": 2e-6}}
    write_results(run_dir, data)


def make_tables(runs, out):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs",
                           str(runs), "--out", str(out)], capture_output=True, text=True)


def test_table_content_and_determinism(tmp_path):
    runs = tmp_path / "runs"
    for seed, (z, f) in enumerate([(0.5, 0.9), (0.7, 0.8), (0.6, 0.85)]):
        fake_run(runs, "equitune", seed, z, f)
    fake_run(runs, "vanilla", 0, 0.4, 0.7)
    fake_run(runs, "vanilla", 1, 0.0, 0.0, pretrained=False)      # excluded
    fake_run(runs, "vanilla", 2, 0.0, 0.0, status="running")       # incomplete: ignored
    proc = make_tables(runs, tmp_path / "tables")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "tables" / "digits_rot90.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| vanilla |") and lines[2].startswith("| equitune |")
    assert "| 0.400 |" in lines[1] and lines[1].endswith("| 1 |")
    assert "0.600 ± 0.100" in lines[2] and "0.850 ± 0.050" in lines[2]
    assert "| — |" in lines[2]                                     # no λ phase for equitune
    assert "2.0e-06" in lines[2] and lines[2].endswith("| 3 |")
    csv = (tmp_path / "tables" / "digits_rot90.csv").read_text()
    assert csv.splitlines()[0].startswith('method,backbone,group,"upright (pretrained,')
    before = md + csv
    make_tables(runs, tmp_path / "tables")
    after = ((tmp_path / "tables" / "digits_rot90.md").read_text()
             + (tmp_path / "tables" / "digits_rot90.csv").read_text())
    assert before == after


def test_missing_runs_directory_exits_2(tmp_path):
    proc = make_tables(tmp_path / "nope", tmp_path / "tables")
    assert proc.returncode == 2 and "no runs directory" in proc.stderr
