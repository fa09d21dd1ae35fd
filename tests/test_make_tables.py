"""Tables from synthetic results.json files: means, stds, exclusions, determinism."""

import importlib.util
import json
import subprocess
import sys

from equiv.results import write_results
from tests.helpers import ROOT


def fake_run(root, method, seed, zeroshot, finetuned, pretrained=True, status="complete",
             invariance_error=2e-6):
    run_dir = root / "digits_rot90" / method / "default" / f"seed={seed}"
    data = {"status": status, "task": "digits_rot90", "method": method, "backbone": "small_cnn",
            "group": "rot90", "seed": seed, "pretrained": pretrained,
            "config": {"task": {"family": "image_classification"}},
            "metrics": {"upright_accuracy": 0.98, "zeroshot_accuracy": zeroshot,
                        "finetuned_accuracy": finetuned,
                        "finetuned_invariance_error": invariance_error}}
    write_results(run_dir, data)


def make_tables(runs, out):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs",
                           str(runs), "--out", str(out)], capture_output=True, text=True)


def test_table_content_and_determinism(tmp_path):
    runs = tmp_path / "runs"
    for seed, (z, f) in enumerate([(0.5, 0.9), (0.7, 0.8), (0.6, 0.85)]):
        fake_run(runs, "equitune", seed, z, f, invariance_error=[1e-6, 2e-6, 1.5e-6][seed])
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
    assert "2.0e-06" in lines[2] and lines[2].endswith("| 3 |")     # the worst seed's error
    csv = (tmp_path / "tables" / "digits_rot90.csv").read_text()
    assert csv.splitlines()[0].startswith('method,backbone,group,"upright (pretrained,')
    before = md + csv
    make_tables(runs, tmp_path / "tables")
    after = ((tmp_path / "tables" / "digits_rot90.md").read_text()
             + (tmp_path / "tables" / "digits_rot90.csv").read_text())
    assert before == after


def test_interpolated_group_runs_get_the_exact_error_and_masked_columns(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "equitune", 0, 0.5, 0.9, invariance_error=1.5)
    proc = make_tables(runs, tmp_path / "plain")
    assert proc.returncode == 0, proc.stderr
    md_plain = (tmp_path / "plain" / "digits_rot90.md").read_text()
    assert "exact elements" not in md_plain and "masked" not in md_plain
    path = runs / "digits_rot90" / "equitune" / "default" / "seed=0" / "results.json"
    data = json.loads(path.read_text())
    data["metrics"].update(finetuned_invariance_error_exact=3e-6, upright_masked_accuracy=0.97)
    path.write_text(json.dumps(data))
    assert make_tables(runs, tmp_path / "tables").returncode == 0
    md = (tmp_path / "tables" / "digits_rot90.md").read_text()
    header, _, row = [ln for ln in md.splitlines() if ln.startswith("|")][:3]
    assert header.split(" | ")[-3:-1] == ["max invariance error, exact elements (finetuned)",
                                          "upright, masked to the disc"]
    assert row.endswith("| 1.5e+00 | 3.0e-06 | 0.970 | 1 |")
    assert "quarter turns alone" in md


def test_missing_runs_directory_exits_2(tmp_path):
    proc = make_tables(tmp_path / "nope", tmp_path / "tables")
    assert proc.returncode == 2 and "no runs directory" in proc.stderr


def dqn_run(root, env, method, seed, zero_shot, finetuned, pretrained_return,
            lambda_phase=None):
    data = {"status": "complete", "task": f"dqn_{env}", "method": method,
            "backbone": "qnet_mlp", "group": f"{env}_reflect", "seed": seed, "pretrained": True,
            "config": {"task": {"family": "dqn"}},
            "metrics": {"pretrained_return": pretrained_return, "return_zero_shot": zero_shot,
                        "return_finetuned": finetuned}}
    if lambda_phase is not None:
        data["metrics"]["return_lambda_phase"] = lambda_phase
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
    for seed, (z, lam, f) in enumerate([(100.0, 480.0, 500.0), (120.0, 500.0, 490.0)]):
        dqn_run(runs, "cartpole", "lambda_equitune", seed, z, f, 500.0, lambda_phase=lam)
    assert module.main(["--runs", str(runs), "--out", str(tmp_path / "tables")]) == 0
    md = (tmp_path / "tables" / "dqn.md").read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| env | backbone | group | method | pretrained DQN")
    assert "| after phase (λ / canonicalizer) | finetuned | seeds |" in lines[0]
    assert lines[1] == ("| gridworld | qnet_mlp | gridworld_reflect | equitune | 0.900 | 0.250 | "
                        "— | 0.500 | 1 |")
    assert lines[2].startswith("| cartpole | qnet_mlp | cartpole_reflect | vanilla | 500.0 |")
    assert lines[3] == ("| cartpole | qnet_mlp | cartpole_reflect | lambda_equitune | 500.0 | "
                        "110.0 ± 14.1 | 490.0 ± 14.1 | 495.0 ± 7.1 | 2 |")
    assert lines[4] == ("| cartpole | qnet_mlp | cartpole_reflect | equizero | 500.0 | "
                        "150.0 ± 70.7 | — | 450.0 ± 70.7 | 2 |")
    assert not (tmp_path / "tables" / "dqn_cartpole.md").exists()
    assert (tmp_path / "tables" / "dqn.csv").read_text().count("\n") == 5


def scan_run(root, split, cell, method, seed, zero_shot, finetuned, group="scan_verb",
             task=None, **metrics):
    task = task or f"scan_{split}"
    data = {"status": "complete", "task": task, "method": method,
            "backbone": f"seq2seq_{cell}", "group": group, "seed": seed,
            "pretrained": True, "config": {"task": {"family": "scan", "split": split}},
            "metrics": {"test_acc_zero_shot": zero_shot, "test_acc": finetuned, **metrics}}
    write_results(root / task / method / cell / group / f"seed={seed}", data)


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
    assert "| 0.625 ± 0.177 | — | — | — | 0.750 ± 0.177 |" in lines[3]
    assert not (tmp_path / "tables" / "scan_add_jump.md").exists()


def test_scan_table_shows_groups_view_ceilings_oracles_and_the_lambda_phase(tmp_path):
    runs = tmp_path / "runs"
    for seed, oracle in enumerate([0.75, 0.625]):
        for method in ("equizero", "lambda_equitune"):     # one oracle per seed: not doubled
            extra = {"test_acc_lambda_phase": 0.5 + seed / 4} if method == "lambda_equitune" \
                else {}
            scan_run(runs, "add_jump", "rnn", method, seed, 0.25, 0.5, test_view_ceiling=0.771,
                     test_acc_oracle=oracle, **extra)
            # Add Jump under the 4-verb group, by its preset task name: rows of split add_jump.
            scan_run(runs, "add_jump", "rnn", method, seed, 0.875, 0.875, group="scan_verb4",
                     task="scan_add_jump_verb4", test_view_ceiling=1.0, test_acc_oracle=0.9375,
                     **extra)
        # canonicalize's phase shares the "after phase" column
        scan_run(runs, "add_jump", "rnn", "canonicalize", seed, 0.875, 0.875, group="scan_verb4",
                 task="scan_add_jump_verb4", test_view_ceiling=1.0, test_acc_oracle=0.9375,
                 test_acc_canonicalizer_phase=0.9)
    scan_run(runs, "around_right", "rnn", "equizero", 0, 0.75, 0.75, group="scan_direction",
             test_view_ceiling=0.839, test_acc_oracle=0.8125)
    assert make_tables(runs, tmp_path / "tables").returncode == 0
    md = (tmp_path / "tables" / "scan.md").read_text()
    lines = [ln.split(" | ") for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip("| ") for c in lines[0]]
    assert header[4:11] == ["pretrained model, val", "view ceiling (test)", "zero-shot val",
                            "zero-shot test", "after phase val", "after phase test",
                            "finetuned val"]
    rows = [dict(zip(header, (c.strip("| ") for c in ln), strict=True)) for ln in lines[1:]]
    oracle = "oracle (in-training view)"
    assert [(r["split"], r["group"], r["method"]) for r in rows] == [
        ("add_jump", "scan_verb", "lambda_equitune"), ("add_jump", "scan_verb", "equizero"),
        ("add_jump", "scan_verb", oracle),
        ("add_jump", "scan_verb4", "lambda_equitune"), ("add_jump", "scan_verb4", "equizero"),
        ("add_jump", "scan_verb4", "canonicalize"), ("add_jump", "scan_verb4", oracle),
        ("around_right", "scan_direction", "equizero"), ("around_right", "scan_direction", oracle)]
    assert [r["view ceiling (test)"] for r in rows] == ["0.771"] * 3 + ["1.000"] * 4 + ["0.839"] * 2
    assert rows[2]["zero-shot test"] == "0.688 ± 0.088" and rows[2]["seeds"] == "2"
    assert rows[6]["zero-shot test"] == "0.938 ± 0.000" and rows[6]["finetuned test"] == "—"
    assert rows[8]["zero-shot test"] == "0.812" and rows[8]["seeds"] == "1"
    assert rows[0]["after phase test"] == "0.625 ± 0.177" and rows[0]["zero-shot test"] == \
        "0.250 ± 0.000"
    assert rows[1]["after phase test"] == "—"
    assert rows[3]["after phase test"] == "0.625 ± 0.177"
    assert rows[5]["after phase test"] == "0.900 ± 0.000"
    assert "view ceiling" in md and "oracle" in md.split("\n\n")[1]     # explained in the note


def load_script():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts" /
                                                  "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clip_run(root, task, backbone, method, seed, upright, zeroshot, steps=0, curve=(),
             pretrained=True, dataset="cifar100", **extra):
    metrics = {"upright_accuracy": upright, "zeroshot_accuracy": zeroshot,
               "zeroshot_invariance_error": 3e-7, **extra}
    if steps:
        metrics["finetuned_accuracy"] = curve[-1][1]
    data = {"status": "complete", "task": task, "method": method, "backbone": backbone,
            "group": "rot90", "seed": seed, "pretrained": pretrained,
            "config": {"task": {"family": "clip", "dataset": dataset,
                                "finetune": {"steps": steps}}},
            "metrics": metrics, "curves": {"test_accuracy": [{"step": s, "value": v}
                                                              for s, v in curve]}}
    write_results(root / task / method / f"{backbone}_{dataset}_{steps}" / f"seed={seed}", data)


def table_lines(path):
    return [ln for ln in path.read_text().splitlines() if ln.startswith("| ")]


def test_clip_tables_put_paper_numbers_beside_ours_and_not_run_rows(tmp_path):
    module, runs, out = load_script(), tmp_path / "runs", tmp_path / "tables"
    for seed, z in enumerate([0.3, 0.4]):
        clip_run(runs, "clip_rot90", "clip_rn50", "equizero", seed, 0.41, z)
    clip_run(runs, "clip_rot90", "clip_rn50", "vanilla", 0, 0.9, 0.9, pretrained=False)
    clip_run(runs, "clip_rot90", "clip_vitb16", "lambda_equitune", 0, 0.6, 0.5, steps=4000,
             curve=[(0, 0.625), (1000, 0.6875), (4000, 0.75)])
    # canonicalize: zero-shot after its prior phase, "after phase" after its canonicalizer phase
    clip_run(runs, "clip_rot90", "clip_rn50", "canonicalize", 0, 0.41, 0.25,
             canonicalizer_phase_accuracy=0.375)
    clip_run(runs, "clip_rot90", "clip_rn50", "canonicalize", 0, 0.41, 0.25, steps=4000,
             curve=[(0, 0.375), (4000, 0.5)], canonicalizer_phase_accuracy=0.375)
    assert module.main(["--runs", str(runs), "--out", str(out)]) == 0
    lines = table_lines(out / "clip_zeroshot.md")
    assert lines[0] == ("| dataset | task | backbone | method | upright (backbone, no transform) "
                        "| upright (backbone, no transform) (paper) | zero-shot | zero-shot (paper)"
                        " | after phase (λ / canonicalizer) | max invariance error (zero-shot) "
                        "| seeds |")
    assert len(lines) == 1 + 48 + 1                 # 2 datasets x 2 transforms x 4 CLIPs x 3, ours
    # Fig. 7/8 (CIFAR100, rot90, RN50): upright 41.77 %, pretrained 24.33 %, equizero 38.87 %
    assert lines[1] == ("| cifar100 | clip_rot90 | clip_rn50 | vanilla | not run | 0.4177 | "
                        "not run | 0.2433 | not run | not run | 0 |")   # pretrained=false: excluded
    assert lines[3] == ("| cifar100 | clip_rot90 | clip_rn50 | equizero | 0.410 ± 0.000 | 0.4177 | "
                        "0.350 ± 0.071 | 0.3887 | — | 3.0e-07 | 2 |")
    assert lines[4] == ("| cifar100 | clip_rot90 | clip_rn50 | canonicalize | 0.410 | 0.4177 | "
                        "0.250 | — | 0.375 | 3.0e-07 | 1 |")
    # Fig. 4c (flip-ImageNet-V2, ViT-B/16): equizero 60.67 %, upright 61.89 % (Fig. 4a)
    assert ("| imagenet_v2 | clip_flip | clip_vitb16 | equizero | not run | 0.6189 | not run | "
            "0.6067 | not run | not run | 0 |") in lines
    ft = table_lines(out / "clip_finetune.md")
    assert len(ft) == 1 + 12 + 1                    # 4 CLIPs x 3 methods (Figs. 5/11), ours
    assert ft[4].startswith("| cifar100 | clip_rot90 | clip_rn50 | canonicalize | 0.375 | — | ")
    assert ft[0].startswith("| dataset | task | backbone | method | step 0 | step 0 (paper) | "
                            "step 1000 | step 1000 (paper) | step 2000 |")
    vit = next(ln for ln in ft if "| clip_vitb16 | lambda_equitune |" in ln)
    assert vit == ("| cifar100 | clip_rot90 | clip_vitb16 | lambda_equitune | 0.625 | 0.6195 | "
                   "0.688 | 0.7039 | — | 0.7092 | — | 0.7174 | 0.750 | 0.7219 | — | 1 |")
    assert "| clip_rn50 | equizero | not run | 0.3887 | not run | 0.3949 |" in ft[1 + 2]
    # the zero-shot finetuning run is not in the zero-shot table
    assert not any("clip_vitb16 | lambda_equitune" in ln for ln in lines)


def test_latex_tables_are_booktabs_and_escaped(tmp_path):
    module, runs, out = load_script(), tmp_path / "runs", tmp_path / "tables"
    for seed, z in enumerate([0.3, 0.4]):
        clip_run(runs, "clip_rot90", "clip_rn50", "equizero", seed, 0.41, z)
    assert module.main(["--runs", str(runs), "--out", str(out)]) == 0
    tex = (out / "clip_zeroshot.tex").read_text().splitlines()
    assert tex[1] == r"\begin{tabular}{" + "l" * 11 + "}"
    assert tex[2] == r"\toprule" and tex[4] == r"\midrule" and tex[-2] == r"\bottomrule"
    assert (r"cifar100 & clip\_rot90 & clip\_rn50 & equizero & 0.410 $\pm$ 0.000 & 0.4177 & "
            r"0.350 $\pm$ 0.071 & 0.3887 & --- & 3.0e-07 & 2 \\") in tex
    nlg = (out / "nlg.tex").read_text()
    assert r"$\approx$0.52" in nlg and "≈" not in nlg
    assert module.latex_escape("a_b & 5% #1 {x} ~ ^ \\ λ — ×") == (
        r"a\_b \& 5\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"$\lambda$ --- $\times$")
    for name in ("digits_rot90", "dqn", "scan"):        # no runs of these: not written
        assert not (out / f"{name}.tex").exists()


def nlg_run(root, method, seed, shares, relaxed=False):
    metrics = {f"{label}_share.{demo}": v for demo, row in shares.items()
               for label, v in zip(("negative", "neutral", "positive", "other"), row,
                                   strict=True)}
    data = {"status": "complete", "task": "nlg_race_respect", "method": method,
            "backbone": "gpt2", "group": "word_swap_race", "seed": seed, "pretrained": True,
            "config": {"task": {"family": "nlg", "relaxed": relaxed}},
            "metrics": {**metrics, "fairness_gap": 0.1}}
    write_results(root / "nlg" / method / str(relaxed) / f"seed={seed}", data)


def test_nlg_table_rows_per_demographic_with_pixel_read_paper_values(tmp_path):
    module, runs, out = load_script(), tmp_path / "runs", tmp_path / "tables"
    nlg_run(runs, "vanilla", 0, {"Black_person": (0.5, 0.25, 0.125, 0.125),
                                 "White_person": (0.25, 0.25, 0.375, 0.125)})
    nlg_run(runs, "equitune", 0, {"Black_person": (0.5, 0.25, 0.125, 0.125)}, relaxed=True)
    assert module.main(["--runs", str(runs), "--out", str(out)]) == 0
    lines = table_lines(out / "nlg.md")
    assert len(lines) == 1 + 10                   # Fig. 3 race-respect: 5 models x 2 groups
    assert lines[1] == ("| nlg_race_respect | vanilla |  | Black person | 0.50 | ≈0.52 | 0.25 | "
                        "≈0.28 | 0.12 | ≈0.16 | 0.12 | ≈0.05 | 1 |")
    assert lines[6].startswith("| nlg_race_respect | equitune | relaxed | White person | not run "
                               "| ≈0.44 |")
    assert lines[5].endswith("| 1 |") and lines[3].endswith("| 0 |")


def test_cnn_table_reads_epochs_from_the_curve(tmp_path):
    module, runs, out = load_script(), tmp_path / "runs", tmp_path / "tables"
    for seed, (e1, e10) in enumerate([(0.5, 0.75), (0.625, 0.875)]):
        curve = [{"step": 0, "value": 0.1}, {"step": 100, "value": e1},
                 {"step": 550, "value": 0.7}, {"step": 1000, "value": e10}]
        data = {"status": "complete", "task": "cnn_cifar10_rot90", "method": "equizero",
                "backbone": "tv_alexnet", "group": "rot90", "seed": seed, "pretrained": True,
                "config": {"task": {"family": "image_classification", "finetune": {
                    "eval_every": 100}, "equizero_proxy": "neg_max_prob"},
                    "method": {"proxy": "neg_max_prob"}},
                "metrics": {"zeroshot_accuracy": 0.1, "finetuned_accuracy": e10},
                "curves": {"test_accuracy": curve}}
        write_results(runs / "cnn" / f"seed={seed}", data)
    assert module.main(["--runs", str(runs), "--out", str(out)]) == 0
    lines = table_lines(out / "cnn_cifar10_rot90.md")
    row = next(ln for ln in lines if "| tv_alexnet | equizero | neg_max_prob |" in ln)
    assert row == ("| tv_alexnet | equizero | neg_max_prob | 0.100 ± 0.000 | 0.562 ± 0.088 | "
                   "≈0.687 | 0.812 ± 0.088 | 0.812 ± 0.088 | ≈0.723 | — | 2 |")
    assert ("| tv_alexnet | equizero | entropy | not run | not run | ≈0.525 | not run | not run | "
            "≈0.536 | not run | 0 |") in lines


def test_paper_numbers_file_is_well_formed():
    module = load_script()
    rows = module.load_paper(module.PAPER_FILE)
    keys = [(r["table"], *(r[k] for k in module.PAPER_KEYS), r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))                              # one row per number
    assert all(r["source"].startswith("PAPER.md §4") for r in rows)
    counts = {t: sum(r["table"] == t for r in rows) for t in {r["table"] for r in rows}}
    assert counts == {"clip_zeroshot": 8 + 48, "clip_finetune": 60, "cnn_cifar10_rot90": 80,
                      "nlg": 40}
    texts = {k: r["text"] for k, r in zip(keys, rows, strict=True)}
    assert texts[("clip_zeroshot", "clip_rot90", "imagenet_v2", "clip_vitb16", "equizero", "",
                  "", "", "zeroshot_accuracy")] == "0.6020"
    assert texts[("clip_finetune", "clip_rot90", "cifar100", "clip_vitb32", "equizero", "", "",
                  "4000", "test_accuracy")] == "0.6382"
    assert all(r["text"].startswith("≈") == (r["table"] in ("cnn_cifar10_rot90", "nlg"))
               for r in rows)


def test_all_tables_are_byte_identical_on_rerun(tmp_path):
    module, runs = load_script(), tmp_path / "runs"
    for seed, z in enumerate([0.3, 0.4, 0.45]):
        clip_run(runs, "clip_flip", "clip_rn101", "equitune", seed, 0.5, z)
        fake_run(runs, "equitune", seed, z, z + 0.1)
    nlg_run(runs, "equizero", 0, {"Black_person": (0.5, 0.25, 0.125, 0.125)})
    outputs = []
    for _ in range(2):                      # the same --out: the intro names it
        assert module.main(["--runs", str(runs), "--out", str(tmp_path / "tables")]) == 0
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / "tables").iterdir())})
    assert outputs[0] == outputs[1]
    assert {"clip_zeroshot.tex", "nlg.csv", "digits_rot90.tex"} <= set(outputs[0])


class FakeWandbRun:
    def __init__(self, run_id, config, summary, history=(), state="finished"):
        self.id, self.config, self.summary, self.state = run_id, config, summary, state
        self._history = list(history)

    def scan_history(self, keys):
        return [{k: row.get(k) for k in keys} for row in self._history]


class FakeWandbApi:
    def __init__(self, runs):
        self._runs, self.paths = runs, []

    def runs(self, path):
        self.paths.append(path)
        return list(self._runs)


def test_wandb_source_gives_the_same_tables_as_results_json(tmp_path):
    """Config + summary (+ logged test_accuracy history) from a fake ``wandb.Api()``; no network."""
    module = load_script()

    def config(backbone, seed, pretrained=True):
        return {"task": {"name": "clip_rot90", "family": "clip", "dataset": "cifar100",
                         "finetune": {"steps": 4000}},
                "method": {"name": "equitune"}, "backbone": {"name": backbone,
                                                              "pretrained": pretrained},
                "group": {"name": "rot90"}, "seed": seed}

    runs = [FakeWandbRun("b", config("clip_rn50", 1), {"zeroshot_accuracy": 0.25, "_step": 4000,
                                                       "finetuned_accuracy": 0.5},
                         [{"_step": 1000, "test_accuracy": 0.375}, {"_step": 1000}]),
            FakeWandbRun("a", config("clip_rn50", 0), {"zeroshot_accuracy": 0.25,
                                                       "finetuned_accuracy": 0.5},
                         [{"_step": 1000, "test_accuracy": 0.25}]),
            FakeWandbRun("c", config("clip_rn50", 2), {}, state="running"),       # unfinished
            FakeWandbRun("d", config("clip_rn50", 3, pretrained=False),           # excluded
                         {"zeroshot_accuracy": 0.9}, [{"_step": 1000, "test_accuracy": 0.9}]),
            FakeWandbRun("e", {"lr": 1}, {"loss": 1.0})]                          # not ours
    api = FakeWandbApi(runs)
    out = tmp_path / "tables"
    assert module.main(["--wandb", "me/equiv", "--out", str(out)], api=api) == 0
    assert api.paths == ["me/equiv"]
    md = (out / "clip_finetune.md").read_text()
    assert "from `W&B me/equiv` by `python scripts/make_tables.py --wandb me/equiv --out" in md
    row = next(ln for ln in table_lines(out / "clip_finetune.md")
               if "| clip_rn50 | equitune |" in ln)
    assert row.startswith("| cifar100 | clip_rot90 | clip_rn50 | equitune | — | 0.2835 | "
                          "0.312 ± 0.088 | 0.2926 |")
    assert row.endswith("| 2 |")
    records = module.wandb_runs("me/equiv", FakeWandbApi(runs))
    assert [r["path"] for r in records] == ["wandb:me/equiv/a", "wandb:me/equiv/b",
                                            "wandb:me/equiv/d"]
    assert records[1]["metrics"] == {"zeroshot_accuracy": 0.25, "finetuned_accuracy": 0.5}
    assert records[1]["curves"] == {"test_accuracy": [{"step": 1000, "value": 0.375}]}
    assert module.main(["--wandb", "me/empty", "--out", str(out)], api=FakeWandbApi([])) == 2
