"""scripts/regen_cost.py: tables summed from a timing log; bad input is one line, exit 2."""

from scripts.regen_cost import main

LOG = """\
2026-12-03T10:00:00Z rc=0 100.0 50.0 10.0 task=scan_add_jump method=equizero seed=0
2026-12-03T10:01:00Z rc=0 30.0 20.0 0.0 task=scan_around_right method=vanilla seed=1
2026-12-03T10:05:00Z rc=1 60.0 30.0 0.0 task=dqn_cartpole method=equitune seed=0
2026-12-04T09:00:30Z rc=0 30.0 25.0 5.0 task=dqn_acrobot method=vanilla seed=0
"""


def test_tables_sum_cpu_and_wall_and_count_only_busy_time(tmp_path, capsys):
    log = tmp_path / "times.txt"
    log.write_text(LOG)
    assert main([str(log)]) == 0
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines()[2:]}
    # runs, failed, CPU-min, process wall-min, CPU/2, busy: SCAN's runs 09:58:20-10:00:00 and
    # 10:00:30-10:01:00 count 130 s, not the 30 s gap; the DQN runs a day apart 60 s + 30 s.
    assert rows["SCAN"] == ["2", "0", "1.3", "2.2", "0.7", "2.2"]
    assert rows["DQN"] == ["2", "1", "1.0", "1.5", "0.5", "1.5"]
    assert rows["all"][:3] == ["4", "1", "2.3"] and rows["all"][5] == "3.7"


def test_overlapping_runs_count_once(tmp_path, capsys):
    log = tmp_path / "times.txt"
    log.write_text("2026-12-03T10:01:40Z rc=0 100.0 90.0 0.0 task=digits_rot90 seed=0\n"
                   "2026-12-03T10:01:00Z rc=0 100.0 90.0 0.0 task=digits_rot90 seed=1\n")
    assert main([str(log)]) == 0
    row = capsys.readouterr().out.splitlines()[2].split("|")
    assert row[7].strip() == "2.3"  # 09:59:20 -> 10:01:40


def test_unreadable_or_empty_log_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.txt")]) == 2
    (tmp_path / "empty.txt").write_text("\n")
    assert main([str(tmp_path / "empty.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("regen_cost: ") for line in err)
