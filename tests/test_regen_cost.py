"""scripts/regen_cost.py: tables summed from a timing log; bad input is one line, exit 2."""

from scripts.regen_cost import main

LOG = """\
2026-12-03T10:00:00Z rc=0 100.0 50.0 10.0 task=scan_add_jump method=equizero seed=0
2026-12-03T10:01:00Z rc=0 30.0 20.0 0.0 task=scan_around_right method=vanilla seed=1
2026-12-03T10:05:00Z rc=1 60.0 30.0 0.0 task=dqn_cartpole method=equitune seed=0
"""


def test_tables_sum_cpu_and_wall_and_span_their_runs(tmp_path, capsys):
    log = tmp_path / "times.txt"
    log.write_text(LOG)
    assert main([str(log)]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    # runs, failed, CPU-min, process wall-min, CPU/2, elapsed (first start 09:58:20 -> 10:01)
    assert rows["SCAN"] == ["2", "0", "1.3", "2.2", "0.7", "2.7"]
    assert rows["DQN"] == ["1", "1", "0.5", "1.0", "0.2", "1.0"]
    assert rows["all"][:3] == ["3", "1", "1.8"] and rows["all"][5] == "6.7"


def test_unreadable_or_empty_log_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.txt")]) == 2
    (tmp_path / "empty.txt").write_text("\n")
    assert main([str(tmp_path / "empty.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("regen_cost: ") for line in err)
