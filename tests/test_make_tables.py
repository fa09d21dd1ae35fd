"""Tables from synthetic results.json files: means, stds, exclusions, determinism."""

import importlib.util
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


def dqn_run(root, env, method, seed, zero_shot, finetuned, pretrained_return):
    data = {"status": "complete", "task": f"dqn_{env}", "method": method,
            "backbone": "qnet_mlp", "group": f"{env}_reflect", "seed": seed, "pretrained": True,
            "config": {"task": {"family": "dqn"}},
            "metrics": {"pretrained_return": pretrained_return, "return_zero_shot": zero_shot,
                        "return_finetuned": finetuned}}
    write_results(root / f"dqn_{env}" / method / f"seed={seed}", data)


def test_dqn_table_is_one_file_env_by_method(tmp_path):
    """In-process (no subprocess): environments in protocol order, methods in paper order, the
    shared pretraining return without a zero std, 1 decimal for large returns, 3 for small."""
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts" /
                                                  "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs = tmp_path / "runs"
    for seed, (z, f) in enumerate([(100.0, 400.0), (200.0, 500.0)]):
        dqn_run(runs, "cartpole", "equizero", seed, z, f, 500.0)
    dqn_run(runs, "cartpole", "vanilla", 0, 300.0, 350.0, 500.0)
    dqn_run(runs, "gridworld", "equitune", 0, 0.25, 0.5, 0.9)
    assert module.main(["--runs", str(runs), "--out", str(tmp_path / "tables")]) == 0
    md = (tmp_path / "tables" / "dqn.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| env | backbone | group | method | pretrained DQN")
    assert lines[1] == ("| gridworld | qnet_mlp | gridworld_reflect | equitune | 0.900 | 0.250 | "
                        "0.500 | 1 |")
    assert lines[2].startswith("| cartpole | qnet_mlp | cartpole_reflect | vanilla | 500.0 |")
    assert lines[3] == ("| cartpole | qnet_mlp | cartpole_reflect | equizero | 500.0 | "
                        "150.0 ± 70.7 | 450.0 ± 70.7 | 2 |")
    assert not (tmp_path / "tables" / "dqn_cartpole.md").exists()
    assert (tmp_path / "tables" / "dqn.csv").read_text().count("\n") == 4


def scan_run(root, split, cell, method, seed, zero_shot, finetuned):
    data = {"status": "complete", "task": f"scan_{split}", "method": method,
            "backbone": f"seq2seq_{cell}", "group": "scan_verb", "seed": seed,
            "pretrained": True, "config": {"task": {"family": "scan"}},
            "metrics": {"test_acc_zero_shot": zero_shot, "test_acc": finetuned}}
    write_results(root / f"scan_{split}" / method / cell / f"seed={seed}", data)


def test_scan_table_is_one_file_split_by_cell_by_method(tmp_path):
    runs = tmp_path / "runs"
    scan_run(runs, "around_right", "rnn", "equizero", 0, 0.75, 0.75)
    for seed, (z, f) in enumerate([(0.5, 0.625), (0.75, 0.875)]):
        scan_run(runs, "add_jump", "lstm", "equizero", seed, z, f)
    scan_run(runs, "add_jump", "lstm", "vanilla", 0, 0.0, 0.0)
    scan_run(runs, "add_jump", "rnn", "equitune", 0, 0.25, 0.5)
    assert make_tables(runs, tmp_path / "tables").returncode == 0
    lines = [ln for ln in (tmp_path / "tables" / "scan.md").read_text().splitlines()
             if ln.startswith("| ")]
    assert lines[0].startswith("| split | cell | group | method |")
    cells = [ln.split(" | ")[:4] for ln in lines[1:]]
    assert cells == [["| add_jump", "RNN", "scan_verb", "equitune"],
                     ["| add_jump", "LSTM", "scan_verb", "vanilla"],
                     ["| add_jump", "LSTM", "scan_verb", "equizero"],
                     ["| around_right", "RNN", "scan_verb", "equizero"]]
    assert "| 0.625 ± 0.177 | — | 0.750 ± 0.177 |" in lines[3]
    assert not (tmp_path / "tables" / "scan_add_jump.md").exists()
