"""``scripts/prefetch.py --dry-run``: the plan for a task, without touching the network."""

import importlib.util
import sys

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def prefetch():
    spec = importlib.util.spec_from_file_location("prefetch", ROOT / "scripts" / "prefetch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["prefetch"] = module           # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dry_run(prefetch, capsys, *overrides):
    assert prefetch.main(["--dry-run", *overrides]) == 0
    return capsys.readouterr().out


def test_clip_weights_and_cifar100(prefetch, capsys, tmp_path):
    out = dry_run(prefetch, capsys, "task=clip_rot90", "backbone=clip_rn50",
                  "task.dataset=cifar100", f"cache_dir={tmp_path}")
    assert "would fetch CLIP weights RN50/openai" in out
    assert "timm/resnet50_clip.openai" in out and f"into {tmp_path / 'open_clip'}" in out
    assert "would fetch cifar100" in out and f"into {tmp_path / 'data'}" in out
    assert not any(tmp_path.iterdir())                  # a dry run creates nothing


def test_imagenet_v2_tarball(prefetch, capsys, tmp_path):
    out = dry_run(prefetch, capsys, "task=clip_flip", "backbone=clip_vitb16",
                  "task.dataset=imagenet_v2", f"cache_dir={tmp_path}")
    assert "CLIP weights ViT-B-16/openai" in out
    assert "imagenetv2-matched-frequency.tar.gz" in out
    assert str(tmp_path / "data" / "imagenetv2-matched-frequency-format-val") in out


def test_random_init_needs_no_weights(prefetch, capsys, tmp_path):
    out = dry_run(prefetch, capsys, "task=clip_rot90", "backbone=tiny_clip",
                  "task.dataset=synthetic", f"cache_dir={tmp_path}")
    assert out.startswith("nothing to fetch")


def test_fashion_mnist(prefetch, capsys, tmp_path):
    if not (ROOT / "configs" / "task" / "fmnist_rot90.yaml").exists():
        pytest.skip("task fmnist_rot90 not present")
    out = dry_run(prefetch, capsys, "task=fmnist_rot90", f"cache_dir={tmp_path}")
    assert "would fetch Fashion-MNIST" in out and f"into {tmp_path / 'FashionMNIST'}" in out


def test_bad_override_exits_2(prefetch, capsys):
    assert prefetch.main(["--dry-run", "task=nope"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
