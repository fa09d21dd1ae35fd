"""``scripts/prefetch.py --dry-run``: the plan for a task, without touching the network."""

import importlib.util
import sys
from pathlib import Path

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
    if not (ROOT / "equiv" / "configs" / "task" / "fmnist_rot90.yaml").exists():
        pytest.skip("task fmnist_rot90 not present")
    out = dry_run(prefetch, capsys, "task=fmnist_rot90", f"cache_dir={tmp_path}")
    assert "would fetch Fashion-MNIST" in out and f"into {tmp_path / 'FashionMNIST'}" in out


def test_bad_override_exits_2(prefetch, capsys):
    assert prefetch.main(["--dry-run", "task=nope"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --- pretrained torchvision CNNs on CIFAR-10 --------------------------------------------------

def test_cnn_weights_and_cifar10(prefetch, capsys, tmp_path):
    from equiv.experiments.image_classification.resources import weights_path

    out = dry_run(prefetch, capsys, "task=cnn_cifar10_rot90", f"cache_dir={tmp_path}")
    assert "would fetch torchvision weights ResNet18_Weights.IMAGENET1K_V1" in out
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in out
    assert f"into {weights_path('resnet18', tmp_path)}" in out      # where the run looks
    assert "would fetch cifar10" in out and f"into {tmp_path / 'data'}\n" in out
    assert not any(tmp_path.iterdir())


def test_cnn_alexnet_and_a_data_root(prefetch, capsys, tmp_path):
    out = dry_run(prefetch, capsys, "task=cnn_cifar10_rot90", "backbone=tv_alexnet",
                  f"cache_dir={tmp_path}", f"task.data.root={tmp_path / 'cifar'}")
    assert "AlexNet_Weights.IMAGENET1K_V1" in out and "alexnet-owt-7be5be79.pth" in out
    assert f"into {tmp_path / 'cifar'}\n" in out


def test_cnn_random_init_on_synthetic_data_needs_nothing(prefetch, capsys, tmp_path):
    out = dry_run(prefetch, capsys, "task=cnn_cifar10_rot90", "backbone.pretrained=false",
                  "task.dataset=synthetic", f"cache_dir={tmp_path}")
    assert out.startswith("nothing to fetch")


def test_cnn_fetch_lands_where_the_run_looks(prefetch, capsys, tmp_path, monkeypatch):
    """Downloads replaced by stubs: the files end up where validation finds them."""
    import torch.hub

    from equiv.data import cifar
    from equiv.experiments.image_classification.resources import require_weights

    def fake_download(url, model_dir, **kwargs):
        (Path(model_dir) / url.rsplit("/", 1)[-1]).write_bytes(b"weights")

    fetched = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    monkeypatch.setattr(cifar, "download_cifar", lambda name, root: fetched.append((name, root)))
    assert prefetch.main(["task=cnn_cifar10_rot90", "backbone=tv_alexnet",
                          f"cache_dir={tmp_path}"]) == 0
    require_weights("alexnet", tmp_path, "unused")
    assert fetched == [("cifar10", tmp_path / "data")]
    assert cifar.cifar_root(tmp_path) == tmp_path / "data"


# --- fair NLG: GPT-2 and the regard classifier -------------------------------------------------

def test_nlg_gpt2_and_regard(prefetch, capsys, tmp_path):
    from equiv.backbones.gpt2 import hf_cache_dir

    out = dry_run(prefetch, capsys, "task=nlg_race_respect", f"cache_dir={tmp_path}")
    assert "would fetch GPT-2 weights and tokenizer 'gpt2'" in out
    assert "would fetch regard classifier 'sasha/regardv3'" in out
    assert "https://huggingface.co/sasha/regardv3" in out
    assert out.count(f"into {hf_cache_dir(tmp_path)}\n") == 2
    out = dry_run(prefetch, capsys, "task=nlg_gender_occupation", "backbone.model=gpt2-medium",
                  "task.regard_model=someone/regard", f"cache_dir={tmp_path}")
    assert "'gpt2-medium'" in out and "'someone/regard'" in out


@pytest.mark.parametrize(("overrides", "expected"), [
    (["backbone=tiny_gpt2", "task.scorer=vader", "method=equitune"], []),
    (["backbone=tiny_gpt2", "task.scorer=vader", "method=equizero"], ["regard"]),  # its proxy
    (["backbone=tiny_gpt2", "task.scorer=vader", "method=equizero", "method.proxy=vader"], []),
    (["task.scorer=vader", "method=vanilla"], ["GPT-2"]),
])
def test_nlg_fetches_only_what_is_used(prefetch, capsys, tmp_path, overrides, expected):
    out = dry_run(prefetch, capsys, "task=nlg_race_respect", *overrides, f"cache_dir={tmp_path}")
    fetched = [line.split()[2] for line in out.splitlines() if line.startswith("would fetch")]
    assert fetched == expected
    assert out.startswith("nothing to fetch") == (not expected)


def test_nlg_fetch_uses_the_families_cache_dir(prefetch, capsys, tmp_path, monkeypatch):
    """transformers replaced by a stub: every download goes to ``hf_cache_dir(cache_dir)``."""
    import types

    from equiv.backbones.gpt2 import hf_cache_dir

    calls = []

    def loader(cls):
        def from_pretrained(name, cache_dir=None, **kwargs):
            calls.append((cls, name, cache_dir, kwargs))
        return types.SimpleNamespace(from_pretrained=from_pretrained)

    fake = types.SimpleNamespace(**{c: loader(c) for c in (
        "AutoTokenizer", "GPT2LMHeadModel", "AutoModelForSequenceClassification")})
    monkeypatch.setitem(sys.modules, "transformers", fake)
    assert prefetch.main(["task=nlg_race_respect", f"cache_dir={tmp_path}"]) == 0
    assert [(c, n) for c, n, _, _ in calls] == [
        ("AutoTokenizer", "gpt2"), ("GPT2LMHeadModel", "gpt2"),
        ("AutoTokenizer", "sasha/regardv3"), ("AutoModelForSequenceClassification",
                                              "sasha/regardv3")]
    assert {d for _, _, d, _ in calls} == {hf_cache_dir(tmp_path)}
    assert all(not kw.get("local_files_only") for *_, kw in calls)
