"""Task ``fmnist_rot45`` end to end on a tiny synthetic IDX folder (never the real dataset, as
in ``tests/test_fashion_mnist.py``): every method runs and records what an interpolated group
costs, and the upright pretraining is ``fmnist_rot90``'s (one cache key, one backbone). Also
``scripts/rot45_errors.py`` (the README's measurements), on the same folder."""

import json

import pytest

from equiv.runner import execute
from tests.helpers import compose_config
from tests.test_fashion_mnist import CANONICALIZE_FMNIST, TINY_FMNIST, write_dataset

TINY = [o.replace("fmnist_rot90", "fmnist_rot45") for o in TINY_FMNIST]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The synthetic IDX folder and one cache for every run of this module."""
    tmp = tmp_path_factory.mktemp("fmnist-rot45")
    return write_dataset(tmp / "idx"), tmp


def run(shared, name, *overrides, task="fmnist_rot45"):
    root, tmp = shared
    base = TINY if task == "fmnist_rot45" else TINY_FMNIST
    canonicalize = CANONICALIZE_FMNIST if "method=canonicalize" in overrides else []
    cfg = compose_config(*base, *overrides, *canonicalize, f"task.data.root={root}", tmp=tmp)
    return json.loads(execute(cfg, tmp / "runs" / name).results_path.read_text())


@pytest.mark.parametrize("method", ["vanilla", "equitune", "lambda_equitune", "equizero",
                                    "canonicalize"])
def test_fmnist_rot45_end_to_end(shared, method):
    res = run(shared, method, f"method={method}")
    m = res["metrics"]
    assert (res["task"], res["group"], res["method"]) == ("fmnist_rot45", "rot45", method)
    assert m["transform_composition_error"] > 0.1          # noise images: far from a group action
    for key in ("upright_accuracy", "upright_masked_accuracy", "zeroshot_accuracy",
                "finetuned_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    offset = 2 if method in ("lambda_equitune", "canonicalize") else 0
    assert [p["step"] for p in res["curves"]["test_accuracy"]] == [offset + i for i in range(3)]
    for stage in ("zeroshot", "finetuned"):
        exact, overall = m[f"{stage}_invariance_error_exact"], m[f"{stage}_invariance_error"]
        assert overall >= exact
        assert (exact > 1e-3) if method == "vanilla" else (exact < 1e-5)   # float32 rounding
    if method == "canonicalize":
        assert res["config"]["task"]["canonicalizer"]["_target_"].endswith(
            "SteerableCanonicalizer")
        assert 0.0 <= m["finetuned_upright_identity"] <= 1.0
    if method in ("lambda_equitune", "equizero", "canonicalize"):
        assert 0.0 <= m["zeroshot_upright_selected"] <= 1.0


def test_the_exact_subgroup_runs_on_the_c8_task(shared):
    """``group=rot90`` (pixel-exact) on C8 test images: exactly invariant over its own group,
    the steerable canonicalizer included; no quarter-turn metric (every element is exact)."""
    m = run(shared, "rot90", "method=canonicalize", "group=rot90")["metrics"]
    assert m["finetuned_invariance_error"] < 1e-5
    assert "finetuned_invariance_error_exact" not in m and m["zeroshot_upright_selected"] is None
    assert m["transform_composition_error"] > 0.1


def test_pretraining_is_fmnist_rot90s(shared):
    """Upright pretraining does not depend on the test rotations: the same cache key, so the
    backbone pretrained for fmnist_rot90 is reused, not trained again."""
    first = run(shared, "v90", "method=vanilla", "task.finetune.steps=0", task="fmnist_rot90")
    second = run(shared, "v45", "method=vanilla", "task.finetune.steps=0")
    assert first["pretrain"]["hash"] == second["pretrain"]["hash"]
    assert first["pretrain"]["checkpoint"] == second["pretrain"]["checkpoint"]
    assert first["pretrain"]["train_seconds"] == second["pretrain"]["train_seconds"]
    assert first["metrics"]["upright_accuracy"] == second["metrics"]["upright_accuracy"]
    assert "transform_composition_error" not in first["metrics"]


def test_rot45_errors_script_prints_its_three_tables(shared, capsys):
    pytest.importorskip("equiadapt")
    from scripts.rot45_errors import main

    root, tmp = shared
    assert main(["--root", str(root), "--cache-dir", str(tmp / "nothing-cached"), "--images", "4",
                 "--train-size", "16", "--prior-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out and "| float32 | " in out
    assert "| canonicalize | " in out and "| steerable (e2cnn) | 1 | " in out
