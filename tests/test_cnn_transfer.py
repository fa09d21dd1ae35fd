"""Pretrained torchvision CNNs on rot90-CIFAR10 (task cnn_cifar10_rot90): the backbone adapter,
exact invariance of every method on ResNet-18 and AlexNet, the weights and data never being
downloaded or replaced, and the protocol end to end on synthetic and on fake CIFAR-10 files.

Nothing here touches the network: "pretrained" weights are random state dicts saved where the
real ones would be, and CIFAR-10 is a handful of images in torchvision's pickle format.
"""

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets, models

import equiv.experiments.image_classification.protocol as protocol
from equiv.backbones.torchvision_cnn import TorchvisionCNN
from equiv.data.cifar import CIFAR10_CLASSES, load_cifar10_split
from equiv.errors import ConfigError, MissingResourceError
from equiv.experiments.image_classification import resources
from equiv.groups import image_group, rot90
from equiv.methods import Equitune
from equiv.runner import execute, validate
from equiv.testing import assert_equivariant, assert_invariant, equivariance_error
from tests.helpers import IMAGE_METHOD_CONFIGS, compose_config, method_from_config
from tests.test_run_e2e import run_py

SIZES = {"resnet18": 32, "alexnet": 64}            # smallest cheap input sizes (AlexNet >= 63)
METHODS = IMAGE_METHOD_CONFIGS
TINY = ["task=cnn_cifar10_rot90", "backbone.pretrained=false", "backbone.input_size=32",
        "task.dataset=synthetic", "task.finetune.steps=4", "task.finetune.eval_every=2",
        "task.eval.batch_size=16", "task.eval.invariance_probe=4", "task.eval.selection_probe=8"]


def randomize_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics, so that eval-mode BatchNorm is not the identity."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
    return net


# --- weights: where they are, that they load, that nothing else is substituted ---------------

@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_weight_table_matches_torchvision(arch):
    w = resources.TORCHVISION_WEIGHTS[arch]
    enum = getattr(models, w.enum)[w.tag]
    assert enum.url == w.url and str(enum) == w.name


def test_checkpoint_is_loaded_and_the_imagenet_head_replaced(tmp_path):
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    path = resources.weights_path("resnet18", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    torch.manual_seed(2)
    net = TorchvisionCNN("resnet18", 10, weights_file=path)
    assert net.pretrained and torch.equal(net.trunk[0].weight, reference.conv1.weight)
    assert torch.equal(net.trunk[4][0].bn1.running_var, reference.layer1[0].bn1.running_var)
    assert net.classifier.out_features == 10 and net.feature_dim == 512
    assert not TorchvisionCNN("resnet18", 10).pretrained            # random only when asked


def test_corrupt_checkpoint_fails_with_the_fetch_command(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"cannot load ImageNet weights .*fetch it again with: X"):
        TorchvisionCNN("resnet18", 10, weights_file=path, fetch="X")
    with pytest.raises(MissingResourceError, match=r"looked in: .*absent\.pth"):
        TorchvisionCNN("resnet18", 10, weights_file=tmp_path / "absent.pth", fetch="X")


def test_missing_weights_are_refused_before_any_work(tmp_path):
    cfg = compose_config("task=cnn_cifar10_rot90", "backbone=tv_alexnet", "task.dataset=synthetic",
                         tmp=tmp_path)
    with pytest.raises(MissingResourceError) as err:
        validate(cfg)
    message = str(err.value)
    assert "AlexNet_Weights.IMAGENET1K_V1" in message
    assert str(tmp_path / "cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth") in message
    assert (f"python scripts/prefetch.py task=cnn_cifar10_rot90 backbone=tv_alexnet "
            f"cache_dir={tmp_path / 'cache'}") in message
    validate(compose_config(*TINY, tmp=tmp_path))              # random init needs no weights


def test_missing_cifar10_is_refused(tmp_path):
    cfg = compose_config("task=cnn_cifar10_rot90", "backbone.pretrained=false", tmp=tmp_path)
    with pytest.raises(MissingResourceError, match=r"CIFAR-10 .*looked in: .*cache/data/"
                       r"cifar-10-batches-py\).*prefetch\.py task=cnn_cifar10_rot90"):
        validate(cfg)


def test_run_py_exits_2_with_the_prefetch_command(tmp_path):
    proc = run_py("task=cnn_cifar10_rot90", "task.dataset=synthetic", f"output_root={tmp_path}",
                  f"cache_dir={tmp_path / 'c'}", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: torchvision ImageNet weights ResNet18_Weights.IMAGENET1K_V1")
    assert "python scripts/prefetch.py task=cnn_cifar10_rot90 backbone=tv_resnet18" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("overrides", "message"), [
    (["backbone=tv_alexnet", "backbone.input_size=32"], "backbone.input_size=32 is not valid for "
                                                        "alexnet: an integer >= 63"),
    (["task.head=mlp"], "task.head='mlp' is not valid"),
    (["task.finetune.optimizer=rmsprop"], "task.finetune.optimizer"),
    (["task.train_backbone=maybe"], "task.train_backbone='maybe' must be true or false"),
    (["backbone.weights=IMAGENET1K_V2"], "backbone.weights"),
    (["task.dataset=digits"], "needs RGB images"),
    (["backbone=small_cnn"], "has no task.pretrain"),
])
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config("task=cnn_cifar10_rot90", "backbone.pretrained=false",
                                "task.dataset=synthetic", *overrides))


# --- the adapter and the methods: exact invariance, g vs g⁻¹ ----------------------------------

@pytest.fixture(scope="module")
def backbones():
    """Random float64 ResNet-18 and AlexNet with each head, in eval mode (built once)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    built = {(arch, head): randomize_batchnorm(TorchvisionCNN(
        arch, 10, head=head, input_size=SIZES[arch])).eval()
        for arch in SIZES for head in ("replace", "authors")}
    torch.set_default_dtype(previous)
    return built


@pytest.mark.parametrize("head", ["replace", "authors"])
@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_every_method_is_exactly_invariant(float64, backbones, arch, head):
    backbone = backbones[arch, head]
    action = rot90()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 24, 24)           # stored images are smaller; the adapter resizes
    assert equivariance_error(backbone, action, x, invariant=True) > 1e-4   # not by itself
    for name, options in METHODS.items():
        model = method_from_config(options, backbone, action, (3, 24, 24)).eval()
        try:
            assert_invariant(model, action, x, atol=1e-10)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from err


class Dense(torch.nn.Module):
    """The adapter's preprocessing and convolutional layers: a square feature map as output
    (ResNet-18 up to layer3, AlexNet up to its last convolution: 2×2 and 3×3 maps here)."""

    def __init__(self, cnn: TorchvisionCNN):
        super().__init__()
        self.cnn = cnn
        self.convs = cnn.trunk[:-3] if cnn.arch == "resnet18" else cnn.trunk[0][:-1]

    def forward(self, x):
        return self.convs(self.cnn.preprocess(x))


class BrokenEquitune(Equitune):
    """Maps the views back by ``g`` instead of ``g⁻¹``."""

    def align(self, y):
        g = self.action.stacked_elements(y.shape[0] // self.action.order, y.device)
        return self.action.rep_out.apply(y, g).view(self.action.order, -1, *y.shape[1:])


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_equivariant_maps_catch_a_g_versus_inverse_mistake(float64, backbones, arch):
    """C4 acting on the feature maps too (order 4: g ≠ g⁻¹ for quarter turns)."""
    torch.manual_seed(0)
    dense = Dense(backbones[arch, "authors"])
    action = rot90(output="image")
    x = torch.rand(1, 3, 16, 16)
    assert dense(x).shape[-1] in (2, 3)                  # rotations move the map's entries
    for name in ("equitune", "lambda-softmax-input", "equizero-neg_max_prob"):
        model = method_from_config(METHODS[name], dense, action, (3, 16, 16)).eval()
        assert_equivariant(model, action, x, atol=1e-10)
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(BrokenEquitune(dense, action).eval(), action, x, atol=1e-10)


@pytest.mark.parametrize("group", ["rot90", "hflip"])
def test_resizing_commutes_with_the_group(float64, group):
    """Why the group may act on 32×32 images although the network sees 224×224 ones."""
    action = image_group(group)
    cnn = TorchvisionCNN("resnet18", 10, input_size=56).eval()
    x = torch.rand(2, 3, 24, 24)
    for g in action.elements:
        torch.testing.assert_close(cnn.preprocess(action.act_in(x, g)),
                                   action.act_in(cnn.preprocess(x), g), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("arch", "expected"), [("resnet18", 66_633), ("alexnet", 934_508)])
def test_authors_head_and_lambda_match_the_rebuttal_counts(arch, expected):
    """Rebuttal Table R1: 66.6k (ResNet) and 934k (AlexNet) added trainable parameters."""
    cnn = TorchvisionCNN(arch, 10, head="authors", input_size=SIZES[arch])
    model = method_from_config({"name": "lambda_equitune"}, cnn, rot90())
    added = sum(p.numel() for p in [*cnn.classifier.parameters(), *model.lambda_net.parameters()])
    assert added == expected


# --- the protocol end to end ------------------------------------------------------------------

@pytest.fixture
def spy(monkeypatch):
    """Records every evaluation (labels, modes) and the backbone the protocol built."""
    seen = {"evaluations": [], "backbone": None}
    real_accuracy, real_backbone = protocol.accuracy, protocol.imagenet_backbone

    def accuracy(model, x, y, *args):
        seen["evaluations"].append({
            "labels": y.clone(), "size": len(x),
            "training_modules": [type(m).__name__ for m in model.modules() if m.training]})
        return real_accuracy(model, x, y, *args)

    def imagenet_backbone(*args):
        backbone, info = real_backbone(*args)
        seen["backbone"] = backbone
        seen["initial"] = {k: v.clone() for k, v in backbone.state_dict().items()}
        return backbone, info

    monkeypatch.setattr(protocol, "accuracy", accuracy)
    monkeypatch.setattr(protocol, "imagenet_backbone", imagenet_backbone)
    return seen


def changed(seen, prefix):
    final = seen["backbone"].state_dict()
    return {k for k, v in seen["initial"].items()
            if k.startswith(prefix) and not torch.equal(v, final[k])}


@pytest.mark.parametrize("method", ["vanilla", "equitune", "lambda_equitune", "equizero"])
def test_protocol_end_to_end(method, tmp_path, spy):
    cfg = compose_config(*TINY, f"method={method}", tmp=tmp_path)
    res = json.loads(execute(cfg, tmp_path / "run").results_path.read_text())
    m, n_test = res["metrics"], cfg.task.data.synthetic.test
    assert (res["task"], res["backbone"], res["method"]) == ("cnn_cifar10_rot90", "tv_resnet18",
                                                             method)
    assert res["pretrained"] is False and res["pretrain"] is None
    assert m["upright_accuracy"] is None                    # a new head: nothing to measure
    assert [p["step"] for p in res["curves"]["test_accuracy"]] == [0, 2, 4]
    assert res["evaluated_split"] == "test" and res["test_images"] == n_test
    assert res["settings"] == {"head": "replace", "train_backbone": True,
                               "lambda_normalization": "softplus" if method == "lambda_equitune"
                               else None}
    if method != "vanilla":
        assert m["zeroshot_invariance_error"] < 1e-5 and m["finetuned_invariance_error"] < 1e-5
    # every evaluation: all modules in eval mode, on the test split's labels
    test_labels = protocol.DATASETS["synthetic"](cfg).y_test
    assert len(spy["evaluations"]) == 3
    for ev in spy["evaluations"]:
        assert ev["training_modules"] == [] and torch.equal(ev["labels"], test_labels)
    assert changed(spy, "trunk.")                           # the backbone is finetuned
    assert res["parameters"]["finetuned"] == sum(
        v.numel() for v in spy["backbone"].parameters()) + res["parameters"]["added"]


def test_paper_code_compat_trains_only_the_head_and_lambda(tmp_path, spy):
    cfg = compose_config(*TINY, "method=lambda_equitune", "task.paper_code_compat=true",
                         tmp=tmp_path)
    res = json.loads(execute(cfg, tmp_path / "run").results_path.read_text())
    assert res["settings"] == {"head": "authors", "train_backbone": False,
                               "lambda_normalization": "softmax"}
    assert res["parameters"]["finetuned"] == 66_633
    assert not changed(spy, "trunk.")                       # weights and BatchNorm statistics
    assert changed(spy, "classifier.")
    assert all(ev["training_modules"] == [] for ev in spy["evaluations"])


def write_fake_cifar10(root, monkeypatch, n_train=5, n_test=6):
    """torchvision's CIFAR-10 layout with a few random images (checksums patched to match)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}

    def dump(name, obj):
        (folder / name).write_bytes(pickle.dumps(obj))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()

    for i in range(1, 6):
        dump(f"data_batch_{i}", {"data": rng.integers(0, 256, (n_train, 3072), dtype=np.uint8),
                                 "labels": [int(v) for v in rng.integers(0, 10, n_train)]})
    test_labels = [9, 8, 7, 6, 5, 4][:n_test]
    dump("test_batch", {"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                        "labels": test_labels})
    dump("batches.meta", {"label_names": list(CIFAR10_CLASSES)})
    cls = datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]]
                                            for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    return torch.tensor(test_labels)


def test_cifar10_split_is_read_from_the_cache(tmp_path, monkeypatch):
    labels = write_fake_cifar10(tmp_path, monkeypatch)
    split = load_cifar10_split(tmp_path)
    assert split.x_train.shape == (25, 3, 32, 32) and split.x_test.shape == (6, 3, 32, 32)
    assert split.x_train.dtype == torch.float32 and 0.0 <= split.x_test.min() <= 1.0
    assert torch.equal(split.y_test, labels) and split.class_names[0] == "airplane"
    assert len(load_cifar10_split(tmp_path, train_size=7, test_size=3).y_train) == 7


def test_pretrained_run_on_cifar10_files(tmp_path, monkeypatch, spy):
    """The real loading path: weights from cache_dir/torch, CIFAR-10 from cache_dir/data."""
    cache = tmp_path / "cache"
    labels = write_fake_cifar10(cache / "data", monkeypatch)
    path = resources.weights_path("resnet18", cache)
    path.parent.mkdir(parents=True)
    torch.manual_seed(3)
    reference = models.resnet18(weights=None).state_dict()
    torch.save(reference, path)
    cfg = compose_config("task=cnn_cifar10_rot90", "method=equizero", "backbone.input_size=32",
                         "task.finetune.steps=2", "task.finetune.eval_every=2",
                         "task.eval.invariance_probe=2", tmp=tmp_path)
    res = json.loads(execute(cfg, tmp_path / "run").results_path.read_text())
    assert res["pretrained"] is True
    assert res["pretrain"] == {"weights": "ResNet18_Weights.IMAGENET1K_V1",
                               "checkpoint": str(path)}
    assert torch.equal(spy["initial"]["trunk.0.weight"], reference["conv1.weight"])
    assert res["test_images"] == 6 and res["train_images"] == 25
    assert all(torch.equal(ev["labels"], labels) for ev in spy["evaluations"])
