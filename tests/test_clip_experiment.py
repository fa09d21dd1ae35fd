"""The CLIP family end to end in-process (tiny random CLIP, synthetic data), its config checks,
the authors'-code switches, and missing weights/data failing fast with the prefetch command."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from equiv.errors import ConfigError, MissingResourceError
from equiv.runner import execute, validate
from tests.helpers import ROOT, compose_config

TINY_CLIP = ["task=clip_rot90", "backbone=tiny_clip", "backbone.pretrained=false",
             "task.dataset=synthetic", "task.finetune.steps=2", "task.finetune.eval_every=1",
             "task.eval.batch_size=16", "task.eval.invariance_probe=4",
             "++method.lambda_phase.steps=3", "++method.lambda_phase.select_every=2"]


def run_clip(tmp_path, *overrides):
    cfg = compose_config(*TINY_CLIP, *overrides, tmp=tmp_path)
    report = execute(cfg, tmp_path / "run")
    return json.loads(report.results_path.read_text()), report


# Canonicalization's phases at a tiny budget (its keys exist only under method=canonicalize):
# 6 x 16 canonicalizer-phase images revisit the 64 synthetic training images.
TINY_CANONICALIZE = ["method.prior_phase.steps=3", "method.prior_phase.batch_size=16",
                     "method.canonicalizer_phase.steps=6",
                     "method.canonicalizer_phase.batch_size=16"]


@pytest.mark.parametrize("method", ["vanilla", "equitune", "equizero", "lambda_equitune",
                                    "canonicalize"])
def test_clip_rot90_runs_every_method(method, tmp_path):
    res, report = run_clip(tmp_path, f"method={method}",
                           *(TINY_CANONICALIZE if method == "canonicalize" else []))
    assert (res["task"], res["method"], res["backbone"], res["pretrained"]) == (
        "clip_rot90", method, "tiny_clip", False)
    m = res["metrics"]
    for key in ("upright_accuracy", "zeroshot_accuracy", "finetuned_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    assert [p["step"] for p in res["curves"]["test_accuracy"]] == [0, 1, 2]
    if method == "vanilla":
        assert m["zeroshot_invariance_error"] > 1e-4
    else:
        assert m["zeroshot_invariance_error"] < 1e-4 and m["finetuned_invariance_error"] < 1e-4
    if method in ("equizero", "lambda_equitune", "canonicalize"):
        assert 0.0 <= m["zeroshot_upright_selected"] <= 1.0
    if method == "canonicalize":     # upright probe images the canonicalizer leaves as they are
        for stage in ("zeroshot", "canonicalizer_phase", "finetuned"):
            assert 0.0 <= m[f"{stage}_upright_identity"] <= 1.0
        assert 0.0 <= m["canonicalizer_phase_accuracy"] <= 1.0
        assert res["curves"]["test_accuracy"][0]["value"] == m["canonicalizer_phase_accuracy"]
        phase = res["canonicalizer_phase"]          # one selected view per image and step
        assert phase["requested_rows"] >= 6 * 16 and phase["backbone_rows"] <= 64 * 4
        assert res["parameters"]["added"] > 0
        assert any("after the canonicalizer phase" in label for label, _ in report.summary)
    if method == "lambda_equitune":
        lp = res["lambda_phase"]
        assert lp["pool_images"] == 64 and lp["cached_feature_rows"] == 64 * 4
        assert lp["selected_step"] in (0, 2, 3)
    text = res["clip"]["text_classifier"]
    assert text["cached"] is False and text["classes"] == 4 and text["templates"] == 18
    assert res["settings"]["logit_scale"] == "clip" and res["clip"]["logit_scale"] > 1
    assert any("zero-shot" in label for label, _ in report.summary)


def test_text_classifier_cache_is_shared_across_runs(tmp_path):
    first, _ = run_clip(tmp_path, "method=vanilla", "task.finetune.steps=0")
    cfg = compose_config(*TINY_CLIP, "method=equitune", "task.finetune.steps=0", tmp=tmp_path)
    second = json.loads(execute(cfg, tmp_path / "again").results_path.read_text())
    assert second["clip"]["text_classifier"]["cached"] is True
    assert second["clip"]["text_classifier"]["path"] == first["clip"]["text_classifier"]["path"]
    assert second["metrics"]["upright_accuracy"] == first["metrics"]["upright_accuracy"]


def test_paper_code_compat_switches(tmp_path):
    res, _ = run_clip(tmp_path, "method=lambda_equitune", "task.paper_code_compat=true",
                      "group=rot180", "task.transform=rot180")
    s = res["settings"]
    assert (s["logit_scale"], s["output"], s["transform_mode"], s["lambda_combine"]) == (
        1.0, "probs", "per_batch", "authors")
    assert res["clip"]["logit_scale"] == 1.0
    assert res["metrics"]["zeroshot_invariance_error"] < 1e-5


@pytest.mark.parametrize(("overrides", "message"), [
    (["task.dataset=mnist"], "task.dataset='mnist' is not valid"),
    (["backbone=small_cnn"], "does not fit task clip_rot90"),
    (["task.head.logit_scale=-1"], "task.head.logit_scale=-1 is not valid: a finite number > 0"),
    (["task.dataset=imagenet_v2", "task.finetune.steps=5"], "has no training split"),
    (["task.dataset=imagenet_v2", "method=canonicalize"],
     r"has no training split: use task.finetune.steps=0 \(and method.prior_phase.steps=0 "
     r"method.canonicalizer_phase.steps=0\)"),
    (["backbone=tiny_clip"], "use backbone.pretrained=false"),
    (["method=equizero", "method.proxy=accuracy"], "method.proxy='accuracy'"),
])
def test_bad_clip_configs_are_refused(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config("task=clip_rot90", *overrides, tmp=tmp_path))


@pytest.mark.parametrize(("overrides", "resource", "hint"), [
    ([], "open_clip weights RN50/openai",
     "python scripts/prefetch.py task=clip_rot90 backbone=clip_rn50"),
    (["backbone=clip_vitb16", "task=clip_flip"], "open_clip weights ViT-B-16/openai",
     "python scripts/prefetch.py task=clip_flip backbone=clip_vitb16"),
    (["backbone=tiny_clip", "backbone.pretrained=false", "task.dataset=imagenet_v2",
      "method=equitune"], "ImageNet-V2",
     "python scripts/prefetch.py task=clip_rot90 backbone=tiny_clip task.dataset=imagenet_v2"),
    (["backbone=tiny_clip", "backbone.pretrained=false"], "CIFAR-100",
     "python scripts/prefetch.py task=clip_rot90 backbone=tiny_clip"),
])
def test_missing_resources_fail_before_any_work(overrides, resource, hint, tmp_path):
    cfg = compose_config("task=clip_rot90", *overrides, tmp=tmp_path)
    with pytest.raises(MissingResourceError, match=resource) as err:
        execute(cfg, tmp_path / "run")
    assert str(err.value).endswith(hint) and str(tmp_path / "cache") in str(err.value)
    assert not (tmp_path / "run").exists()


def test_run_py_missing_weights_exit_2_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=clip_rot90",
                           "method=equizero", f"output_root={tmp_path / 'out'}",
                           f"cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: open_clip weights RN50/openai")
    assert lines[0].endswith("python scripts/prefetch.py task=clip_rot90 backbone=clip_rn50")
    assert "Traceback" not in proc.stderr
    assert not any((tmp_path / "out").rglob("*")) and not (tmp_path / "cache").exists()
