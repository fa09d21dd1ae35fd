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
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if NAME in line] == [f"wrote {png} and {pdf}"]
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
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if NAME in line] == [
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
        "json", "statistics", "functools"}}
    assert third_party == {"matplotlib", "matplotlib.style", "matplotlib.figure",
                           "matplotlib.lines", "matplotlib.patches", "pandas",
                           "equiv.aggregate", "equiv.paper_numbers"}
    paper = Path(__file__).resolve().parents[1] / "equiv" / "paper_numbers.py"
    tree = ast.parse(paper.read_text())
    assert {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
            for alias in node.names} | {node.module for node in ast.walk(tree)
                                        if isinstance(node, ast.ImportFrom)} == {
        "__future__", "csv", "decimal", "pathlib"}


def fake_nlg_run(root: Path, variant: str, seed: int, shares: dict[str, list[float]],
                 task: str = "nlg_race_respect", scorer: str = "regard",
                 pretrained: bool = True) -> None:
    """An NLG results.json: ``shares`` maps a demographic to its neg/neu/pos/other shares."""
    labels = ("negative", "neutral", "positive", "other")
    dists = {d: dict(zip(labels, v, strict=True)) for d, v in shares.items()}
    method = {"GPT2": "vanilla", "EquiGPT2": "equitune"}.get(variant.removeprefix("R-"),
                                                            "equizero")
    data = {"status": "complete", "task": task, "method": method, "backbone": "gpt2",
            "group": "word_swap_race", "seed": seed, "pretrained": pretrained,
            "metrics": {"fairness_gap": 0.0}, "curves": {}, "distributions": dists,
            "model_variant": variant, "scorer": scorer}
    write_results(root / task / variant / f"seed={seed}", data)


def nlg_runs(root: Path) -> Path:
    fake_nlg_run(root, "EquizeroGPT2", 0, {"Black person": [0.2, 0.3, 0.5, 0.0],
                                           "White person": [0.2, 0.3, 0.5, 0.0]})
    fake_nlg_run(root, "GPT2", 0, {"Black person": [0.5, 0.25, 0.25, 0.0],
                                   "White person": [0.25, 0.25, 0.5, 0.0]})
    fake_nlg_run(root, "GPT2", 1, {"Black person": [0.75, 0.25, 0.0, 0.0],
                                   "White person": [0.25, 0.25, 0.25, 0.25]})
    fake_nlg_run(root, "R-EquiGPT2", 0, {"Black person": [9, 9, 9, 9], "White person": [9] * 4},
                 pretrained=False)                                         # excluded
    return root


def test_regard_shares_average_seeds(tmp_path):
    runs = [r for r in load_runs(nlg_runs(tmp_path)) if r["pretrained"]]
    shares, counts = make_plots.regard_shares(runs)
    assert counts == {"EquizeroGPT2": 1, "GPT2": 2}
    assert shares["GPT2"]["Black person"] == {"other": 0.0, "positive": 0.125, "neutral": 0.25,
                                              "negative": 0.625}
    assert shares["GPT2"]["White person"]["other"] == 0.125


def test_nlg_regard_figure_is_written_deterministically(tmp_path, capsys):
    runs, out = nlg_runs(tmp_path / "runs"), tmp_path / "figures"
    name = "nlg_race_respect_regard"
    assert make_plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"wrote {out / name}.png and {out / name}.pdf" in lines
    assert "skipped nlg_gender_respect_regard: no pretrained runs for task nlg_gender_respect" \
        in lines
    fig = make_plots.nlg_regard_bars(load_runs(runs))
    ax = fig.axes[0]
    assert ax.get_title() == "Race-respect"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Black", "White"] * 2
    notes = [t.get_text().split("\n")[0] for t in ax.texts]
    assert notes == ["GPT2", "EquizeroGPT2"]                      # the paper's order
    heights = [round(p.get_height(), 6) for p in ax.patches]      # bottom to top per bar
    assert heights[:4] == [0.0, 0.125, 0.25, 0.625]               # GPT2 Black: o, p, n, neg
    first = (out / f"{name}.png").read_bytes()
    assert make_plots.main(["--runs", str(runs), "--out", str(out)]) == 0
    assert (out / f"{name}.png").read_bytes() == first


def test_nlg_figure_refuses_mixed_scorers(tmp_path):
    root = nlg_runs(tmp_path / "runs")
    fake_nlg_run(root / "vader", "EquiGPT2", 0, {"Black person": [0.25] * 4,
                                                 "White person": [0.25] * 4}, scorer="vader")
    with pytest.raises(make_plots.SkipFigure, match="different scorers"):
        make_plots.nlg_regard_bars(load_runs(root))


def fake_dqn_run(root: Path, method: str, seed: int, values, env: str = "cartpole",
                 backbone: str = "qnet_mlp", pretrained: float = 500.0) -> None:
    """A DQN results.json: ``values`` is the return curve at steps 0 (zero-shot), 1000, 2000."""
    curve = [{"step": 1000 * i, "value": v} for i, v in enumerate(values)]
    data = {"status": "complete", "task": f"dqn_{env}", "method": method, "backbone": backbone,
            "group": f"{env}_reflect", "seed": seed, "pretrained": True,
            "metrics": {"pretrained_return": pretrained, "return_zero_shot": values[0],
                        "return_finetuned": values[-1]}, "curves": {"return": curve}}
    write_results(root / f"dqn_{env}" / method / backbone / f"seed={seed}", data)


def test_dqn_reference_line_is_the_mean_of_per_seed_pretrainings(tmp_path):
    root = tmp_path / "runs"
    for method in ("equizero", "vanilla"):
        fake_dqn_run(root, method, 0, [400.0, 500.0, 500.0], pretrained=400.0)
        fake_dqn_run(root, method, 1, [300.0, 350.0, 400.0], pretrained=500.0)
    ax = make_plots.dqn_curve(load_runs(root)).axes[0]
    reference = ax.get_lines()[-1]
    assert reference.get_label() == ("pretrained DQN in its own (restricted) setting, "
                                     "mean of 2 seeds")
    assert list(reference.get_ydata()) == [450.0, 450.0]


def test_dqn_learning_curves_one_figure_per_env(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "figures"
    fake_dqn_run(root, "equizero", 0, [400.0, 450.0, 500.0])
    fake_dqn_run(root, "equizero", 1, [300.0, 350.0, 400.0])
    fake_dqn_run(root, "vanilla", 0, [200.0, 300.0, 400.0])
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"wrote {out / 'dqn_cartpole'}.png and {out / 'dqn_cartpole'}.pdf" in lines
    assert "skipped dqn_gridworld: no pretrained runs for task dqn_gridworld" in lines
    fig = make_plots.dqn_curve(load_runs(root))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["vanilla (1 seed)", "equizero (2 seeds)",
                      "pretrained DQN in its own (restricted) setting"]
    assert list(ax.get_lines()[1].get_ydata()) == [350.0, 400.0, 450.0]   # seed mean
    assert list(ax.get_lines()[2].get_ydata()) == [500.0, 500.0]          # reference line
    first = (out / "dqn_cartpole.png").read_bytes()
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    assert (out / "dqn_cartpole.png").read_bytes() == first
    fake_dqn_run(root, "vanilla", 0, [1.0, 1.0, 1.0], backbone="qnet_tiny_mlp")
    with pytest.raises(make_plots.SkipFigure, match="several backbones"):
        make_plots.dqn_curve(load_runs(root))


def fake_image_run(root: Path, method: str, seed: int, values, steps=(0, 50, 100),
                   task: str = "fmnist_rot90", group: str = "rot90") -> None:
    curve = [{"step": s, "value": v} for s, v in zip(steps, values, strict=True)]
    write_results(root / task / method / group / f"seed={seed}", {
        "status": "complete", "task": task, "method": method, "backbone": "small_resnet",
        "group": group, "seed": seed, "pretrained": True,
        "metrics": {"finetuned_accuracy": values[-1]}, "curves": {"test_accuracy": curve}})


def test_image_finetune_curve_per_image_task(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, values in enumerate(([0.25, 0.5, 0.75], [0.75, 0.5, 0.25])):
        fake_image_run(runs, "equizero", seed, values)
    fake_image_run(runs, "vanilla", 0, [0.1, 0.2, 0.3])
    stats = make_plots.curve_stats(load_runs(runs), "test_accuracy", ("equizero", "vanilla"))
    zero = stats[stats["method"] == "equizero"]
    assert zero["mean"].tolist() == [0.5, 0.5, 0.5] and zero["n"].tolist() == [2, 2, 2]
    assert make_plots.main(["--runs", str(runs), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "fmnist_rot90_finetune_curve.png" in out
    assert "skipped digits_rot90_finetune_curve" in out
    assert (tmp_path / "figs" / "fmnist_rot90_finetune_curve.pdf").is_file()


def test_image_curve_draws_the_main_group_and_leaves_subgroup_runs_to_the_table(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        fake_image_run(runs, "equitune", seed, [0.2, 0.4, 0.6], task="fmnist_rot45",
                       group="rot45")
    fake_image_run(runs, "equitune", 0, [0.9, 0.9, 0.9], task="fmnist_rot45", group="rot90")
    fig = make_plots.image_finetune_curve(load_runs(runs))
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "equitune (2 seeds)"]
    assert list(line.get_ydata()) == [0.2, 0.4, 0.6]           # the rot45 seeds, not rot90's


def test_dqn_evaluation_steps_are_aligned_across_seeds():
    """Vectorised envs overshoot an evaluation point by a few steps, differently per seed; the
    figure snaps them to the run's evaluation interval so that every seed counts."""
    runs = []
    for seed, steps in enumerate(((0, 2001, 4003), (0, 2002, 4000))):
        runs.append({"task": "dqn_cartpole", "method": "equitune", "backbone": "qnet_mlp",
                     "seed": seed, "pretrained": True,
                     "config": {"task": {"finetune": {"dqn": {"eval_every": 2000}}}},
                     "curves": {"return": [{"step": s, "value": 10.0 * (seed + 1)}
                                           for s in steps]}})
    stats = make_plots.curve_stats([make_plots.snapped(r, "return") for r in runs], "return")
    assert stats["step"].tolist() == [0, 2000, 4000] and stats["n"].tolist() == [2, 2, 2]
    assert stats["mean"].tolist() == [15.0, 15.0, 15.0]
    assert make_plots.curve_stats(runs, "return")["step"].tolist() == [0]   # unaligned: dropped


def fake_clip_run(root: Path, backbone: str, method: str, seed: int, zeroshot: float,
                  upright: float = 0.5, task: str = "clip_rot90", dataset: str = "cifar100",
                  finetune_steps: int = 0) -> None:
    write_results(root / task / dataset / method / backbone / f"ft={finetune_steps}"
                  / f"seed={seed}", {
        "status": "complete", "task": task, "method": method, "backbone": backbone,
        "group": task.removeprefix("clip_"), "seed": seed, "pretrained": True,
        "config": {"task": {"dataset": dataset, "finetune": {"steps": finetune_steps}}},
        "metrics": {"upright_accuracy": upright, "zeroshot_accuracy": zeroshot}, "curves": {}})


def test_clip_zeroshot_bars_ours_and_paper(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "figures"
    fake_clip_run(root, "clip_rn50", "equizero", 0, 0.375, upright=0.5)
    fake_clip_run(root, "clip_rn50", "equizero", 1, 0.625, upright=0.5)
    fake_clip_run(root, "clip_rn50", "vanilla", 0, 0.25, upright=0.5)
    fake_clip_run(root, "clip_rn50", "equizero", 0, 0.9, finetune_steps=100)     # finetuning
    fake_clip_run(root, "clip_rn50", "equizero", 0, 0.9, dataset="imagenet_v2")  # other figure
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    name = "clip_zeroshot_cifar100_clip_rot90"
    assert f"wrote {out / name}.png and {out / name}.pdf" in lines
    assert "skipped clip_zeroshot_cifar100_clip_flip: no pretrained runs for task clip_flip" \
        in lines
    first = (out / f"{name}.png").read_bytes()
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    assert (out / f"{name}.png").read_bytes() == first

    runs = [r for r in load_runs(root) if r["task"] == "clip_rot90"]
    ax = make_plots.clip_zeroshot_figure("cifar100")(runs).axes[0]
    bars = sorted((round(p.get_x() + p.get_width() / 2, 3), round(p.get_height(), 6))
                  for p in ax.patches)
    # RN50 group at x = 0: upright, vanilla, equitune (not run), equizero, 0.2 apart.
    assert bars == [(-0.3, 50.0), (-0.1, 25.0), (0.3, 50.0)]
    ticks = {(round(float(line.get_xdata()[0]), 3), round(float(line.get_ydata()[0]), 4))
             for line in ax.get_lines() if line.get_gid() == "paper"}   # not error bars
    assert (-0.3, 41.77) in ticks          # paper: RN50 no transformation
    assert (0.1, 28.35) in ticks           # paper: RN50 equitune, not run here
    assert (0.3, 38.87) in ticks           # paper: RN50 equizero
    assert len(ticks) == 16           # 4 backbones × 4 bars from the paper
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["no transformation (2 seeds)", "pretrained model (1 seed)",
                      "equitune (not run)", "equizero (2 seeds)", "paper"]
    assert sum(t.get_text() == "not run" for t in ax.texts) == 13
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RN50", "RN101", "ViT-B/32",
                                                             "ViT-B/16"]


def test_clip_zeroshot_bars_add_canonicalize_where_it_has_runs(tmp_path):
    """Canonicalization is not in the paper: its bar (zero-shot after its prior phase) is drawn
    only when there are runs of it, after the paper's four."""
    root = tmp_path / "runs"
    fake_clip_run(root, "clip_rn50", "equizero", 0, 0.375)
    fake_clip_run(root, "clip_rn50", "canonicalize", 0, 0.25)
    ax = make_plots.clip_zeroshot_figure("cifar100")(load_runs(root)).axes[0]
    bars = sorted((round(p.get_x() + p.get_width() / 2, 3), round(p.get_height(), 6))
                  for p in ax.patches)
    # RN50 group at x = 0: upright, vanilla, equitune, equizero, canonicalize, 0.16 apart.
    assert bars == [(-0.32, 50.0), (0.16, 37.5), (0.32, 25.0)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-2:] == ["canonicalize (prior phase) (1 seed)", "paper"]


def test_clip_zeroshot_bars_skip_without_our_runs_on_the_dataset(tmp_path):
    root = tmp_path / "runs"
    fake_clip_run(root, "clip_rn50", "equizero", 0, 0.5, dataset="imagenet_v2")
    with pytest.raises(make_plots.SkipFigure, match="no zero-shot runs on cifar100"):
        make_plots.clip_zeroshot_figure("cifar100")(load_runs(root))


def fake_lambda_run(root: Path, seed: int, relative_mean, counts, task: str = "digits_rot90",
                    method: str = "lambda_equitune") -> None:
    edges = [i / 10 for i in range(11)]
    write_results(root / task / method / f"seed={seed}", {
        "status": "complete", "task": task, "method": method, "backbone": "small_cnn",
        "group": "rot90", "seed": seed, "pretrained": True,
        "config": {"task": {"transform": "rot90"}}, "metrics": {}, "curves": {},
        "lambda_weights": {"images": sum(counts), "relative_mean": relative_mean,
                           "upright_histogram": {"edges": edges, "counts": counts}}})


def test_lambda_weights_figure(tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "figures"
    fake_lambda_run(root, 0, [0.75, 0.125, 0.0, 0.125], [0] * 7 + [4, 0, 0])
    fake_lambda_run(root, 1, [0.25, 0.25, 0.25, 0.25], [0, 0, 3, 1] + [0] * 6)
    fake_image_run(root, "equizero", 0, [0.5, 0.5, 0.5], task="digits_rot90")   # no λ
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    name = "digits_rot90_lambda_weights"
    assert f"wrote {out / name}.png and {out / name}.pdf" in lines
    first = (out / f"{name}.pdf").read_bytes()
    assert make_plots.main(["--runs", str(root), "--out", str(out)]) == 0
    assert (out / f"{name}.pdf").read_bytes() == first

    left, right = make_plots.lambda_weights_figure(load_runs(root)).axes
    assert [round(p.get_height(), 6) for p in left.patches] == [0.5, 0.1875, 0.125, 0.1875]
    assert [t.get_text() for t in left.get_xticklabels()] == ["upright", "+90°", "+180°",
                                                               "+270°"]
    shares = [round(p.get_height(), 6) for p in right.patches]
    assert shares == [0, 0, 0.375, 0.125, 0, 0, 0, 0.5, 0, 0]       # 8 images pooled
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    assert legend == ["uniform (1/4)", "small_cnn (2 seeds)"]


def test_lambda_weights_figure_skips_runs_without_the_summary(tmp_path):
    root = tmp_path / "runs"
    fake_image_run(root, "lambda_equitune", 0, [0.5, 0.5, 0.5], task="digits_rot90")
    with pytest.raises(make_plots.SkipFigure, match="no runs with lambda_weights"):
        make_plots.lambda_weights_figure(load_runs(root))


def test_clip_finetune_curves_from_finetuning_runs_only(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for steps, name in ((4000, "ft"), (0, "zs")):
            curve = [{"step": s, "value": 0.4 + 0.01 * seed + s / 1e5}
                     for s in range(0, steps + 1, 1000)] or [{"step": 0, "value": 0.3}]
            write_results(runs / "clip_rot90" / "equizero" / name / f"seed={seed}", {
                "status": "complete", "task": "clip_rot90", "method": "equizero",
                "backbone": "clip_rn50", "group": "rot90", "seed": seed, "pretrained": True,
                "config": {"task": {"dataset": "cifar100", "finetune": {"steps": steps}}},
                "metrics": {"zeroshot_accuracy": 0.4, "upright_accuracy": 0.5},
                "curves": {"test_accuracy": curve}})
    loaded = [r for r in load_runs(runs) if r["config"]["task"]["finetune"]["steps"] > 0]
    stats = make_plots.curve_stats(loaded, "test_accuracy", ("equizero",))
    assert stats["step"].tolist() == [0, 1000, 2000, 3000, 4000] and set(stats["n"]) == {2}
    assert make_plots.main(["--runs", str(runs), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert "clip_finetune_rot90_cifar100.png" in out      # zero-shot runs did not block it
    fig = make_plots.clip_finetune_curves(load_runs(runs))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "equizero (2 seeds)" in labels and "equizero (paper)" in labels


def test_scan_verb4_figure_draws_equizero_and_lambda_equitune(tmp_path):
    root = tmp_path / "runs"
    for method in ("equizero", "lambda_equitune", "equitune"):
        fake_run(root, "seq2seq_lstm", method, 0, [0.5, 0.75, 1.0], task="scan_add_jump_verb4",
                 group="scan_verb4")
    spec = next(f for f in make_plots.FIGURES if f.name == "scan_verb4_finetune_curve")
    assert spec.task == "scan_add_jump_verb4"
    ax = spec.draw(load_runs(root)).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "LSTM equizero (1 seed)", "LSTM lambda_equitune (1 seed)"]
    assert "four verbs" in ax.get_title()
