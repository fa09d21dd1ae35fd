"""Fashion-MNIST: the IDX reader, where the files are looked for, fail-fast validation, the
residual backbone's exact invariance under every method, and the protocol end to end on a tiny
synthetic IDX folder (never /usr/share/datasets, which CI does not have).
"""

import gzip
import json

import numpy as np
import pytest
import torch

import equiv.experiments.image_classification.protocol as protocol
from equiv.backbones import SmallResNet
from equiv.data import fashion_mnist as fm
from equiv.data.idx import parse_idx, read_idx, write_idx
from equiv.errors import IdxFormatError, MissingResourceError
from equiv.groups import image_group
from equiv.runner import execute, validate
from equiv.testing import assert_invariant, equivariance_error
from tests.helpers import IMAGE_METHOD_CONFIGS, compose_config, method_from_config
from tests.test_run_e2e import run_py_cpu

N_TRAIN, N_TEST = 48, 24


def write_dataset(folder, gz=True, n_train=N_TRAIN, n_test=N_TEST, seed=0):
    """Four IDX files of random 28×28 images; the label is a bright square's position, so the
    task is learnable and not rotation-invariant."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
            images[i, r:r + 5, col:col + 5] = 255
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    """Tests must not see the Debian package's copy, present on some machines only."""
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "usr-share-datasets-fashion-mnist")
    return fm.SYSTEM_DIR


# --- the IDX format ----------------------------------------------------------------------------

def test_parse_hand_built_idx():
    sizes = (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    data = bytes([0, 0, 0x08, 2]) + sizes + bytes(range(6))
    np.testing.assert_array_equal(parse_idx(data), np.arange(6, dtype=np.uint8).reshape(2, 3))
    ints = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (-5).to_bytes(4, "big", signed=True) \
        + (7).to_bytes(4, "big")
    assert parse_idx(ints).tolist() == [-5, 7]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_raw_and_gz(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    out = read_idx(path, ndim=3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b"\x08\x03" + b[2:], "bad IDX magic number 0x0803"),
    (lambda b: b[:2] + b"\x42" + b[3:], "bad IDX magic"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing data"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b[:3], "too short"),
])
def test_corrupt_idx_is_refused(tmp_path, mutate, message):
    raw = tmp_path / "good-idx1-ubyte"
    write_idx(raw, np.arange(10, dtype=np.uint8))
    bad = tmp_path / "bad-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(mutate(raw.read_bytes())))
    with pytest.raises(IdxFormatError, match=message) as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_truncated_gzip_and_wrong_rank_are_refused(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(100, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(IdxFormatError, match="not a readable gzip file"):
        read_idx(path)
    write_idx(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(IdxFormatError, match="expected 1 dimensions"):
        read_idx(path, ndim=1)


def test_images_and_labels_must_agree(tmp_path):
    folder = write_dataset(tmp_path / "d")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(N_TEST + 1, np.uint8))
    with pytest.raises(IdxFormatError, match=f"has {N_TEST} images but .* {N_TEST + 1} labels"):
        fm.load_fashion_mnist_split(folder, tmp_path)


# --- where the files are looked for ------------------------------------------------------------

def test_search_order(tmp_path, no_system_copy):
    cache = tmp_path / "cache"
    places = [cache / "fashion-mnist", no_system_copy, cache / "FashionMNIST" / "raw"]
    assert fm.search_dirs(None, cache) == places
    for i, folder in enumerate(reversed(places)):      # each one takes over from the later ones
        write_dataset(folder, gz=i % 2 == 0)
        assert fm.locate(None, cache)["train_images"].parent == folder
    with pytest.raises(MissingResourceError):          # an explicit root is the only place
        fm.locate(tmp_path / "elsewhere", cache)


def test_uncompressed_preferred_and_incomplete_folders_skipped(tmp_path, no_system_copy):
    cache = tmp_path / "cache"
    first = write_dataset(cache / "fashion-mnist")
    write_dataset(cache / "FashionMNIST" / "raw", gz=False)
    write_dataset(cache / "FashionMNIST" / "raw", gz=True)
    (first / "t10k-labels-idx1-ubyte.gz").unlink()
    found = fm.locate(None, cache)
    assert found["test_labels"] == cache / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"


def test_missing_dataset_message(tmp_path, no_system_copy):
    with pytest.raises(MissingResourceError) as err:
        fm.locate(None, tmp_path / "cache")
    message = str(err.value)
    for place in fm.search_dirs(None, tmp_path / "cache"):
        assert str(place) in message
    assert "Fashion-MNIST" in message and "python scripts/prefetch.py task=fmnist_rot90" in message


def test_loaded_split(tmp_path):
    folder = write_dataset(tmp_path / "d", gz=False)
    split = fm.load_fashion_mnist_split(folder, tmp_path, test_size=10, split_seed=3)
    assert split.x_train.shape == (N_TRAIN, 1, 28, 28) and split.x_test.shape == (10, 1, 28, 28)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.x_train.min() >= 0.0 and split.x_train.max() == 1.0
    assert split.num_classes == 10 and split.class_names[0] == "T-shirt/top"
    again = fm.load_fashion_mnist_split(folder, tmp_path, test_size=10, split_seed=3)
    assert torch.equal(split.y_test, again.y_test)                  # a fixed subset


# --- validation before any heavy work ----------------------------------------------------------

def test_validate_refuses_a_missing_dataset(tmp_path, no_system_copy):
    cfg = compose_config("task=fmnist_rot90", tmp=tmp_path)
    with pytest.raises(MissingResourceError, match=r"prefetch\.py task=fmnist_rot90"):
        validate(cfg)
    write_dataset(tmp_path / "cache" / "fashion-mnist")
    validate(cfg)
    with pytest.raises(MissingResourceError, match=r"looked in: .*nowhere-here"):
        validate(compose_config("task=fmnist_rot90", f"task.data.root={tmp_path / 'nowhere-here'}"))


def test_run_py_exits_2_on_a_missing_dataset(tmp_path):
    proc, cpu = run_py_cpu("task=fmnist_rot90", f"task.data.root={tmp_path / 'absent'}",
                           f"output_root={tmp_path}", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: Fashion-MNIST")
    assert str(tmp_path / "absent") in lines[0] and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert cpu < 5.0, cpu              # the child's CPU time, not wall time: no heavy work


# --- the residual backbone under every method --------------------------------------------------

METHOD_CONFIGS = IMAGE_METHOD_CONFIGS


def tiny_resnet() -> SmallResNet:
    """Random weights and BatchNorm statistics, so that eval-mode BatchNorm is not the identity."""
    net = SmallResNet(1, 10, width=2, blocks=(1, 1, 1, 1))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("group", ["rot90", "d4"])
@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_every_method_makes_the_residual_cnn_invariant(float64, method, group):
    torch.manual_seed(0)
    action = image_group(group)
    model = method_from_config(METHOD_CONFIGS[method], tiny_resnet(), action, (1, 12, 12)).eval()
    x = torch.randn(2, 1, 12, 12)          # any side works (global pooling); small is fast
    assert_invariant(model, action, x, atol=1e-10)
    assert equivariance_error(model.backbone, action, x, invariant=True) > 1e-3  # not by itself


def test_resnet18_layout():
    net = SmallResNet(1, 10, width=8)
    assert len(net.stages) == 8 and net.feature_dim == 64
    assert net.features(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    strides = [b.conv1.stride[0] for b in net.stages]
    assert strides == [1, 1, 2, 1, 2, 1, 2, 1]


# --- the protocol end to end -------------------------------------------------------------------

TINY_FMNIST = ["task=fmnist_rot90", "backbone=tiny_resnet", "task.pretrain.epochs=1",
               "task.pretrain.batch_size=16", "task.finetune.steps=2", "task.finetune.eval_every=1",
               "task.finetune.batch_size=8", "task.data.test_size=null", "task.eval.batch_size=16",
               "task.eval.invariance_probe=4", "task.eval.selection_probe=8",
               "++method.lambda_phase.steps=2", "++method.lambda_phase.batch_size=8"]
CANONICALIZE_FMNIST = ["method.prior_phase.steps=2", "method.canonicalizer_phase.steps=2",
                       "method.canonicalizer_phase.batch_size=8"]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("fmnist") / "idx")


@pytest.fixture
def eval_mode_checked(monkeypatch):
    """Every accuracy measurement must see BatchNorm (all modules) in eval mode."""
    real = protocol.accuracy

    def checked(model, *args):
        assert not any(m.training for m in model.modules()), "a module is in training mode"
        return real(model, *args)

    monkeypatch.setattr(protocol, "accuracy", checked)


@pytest.mark.parametrize("method", ["vanilla", "equitune", "lambda_equitune", "equizero",
                                    "canonicalize"])
def test_fmnist_protocol_end_to_end(method, synthetic_root, tmp_path_factory, eval_mode_checked):
    tmp = tmp_path_factory.getbasetemp() / "fmnist-e2e"            # cache shared by the methods
    cfg = compose_config(*TINY_FMNIST, f"method={method}", f"task.data.root={synthetic_root}",
                         *(CANONICALIZE_FMNIST if method == "canonicalize" else []), tmp=tmp)
    report = execute(cfg, tmp / "runs" / method)
    res = json.loads(report.results_path.read_text())
    m = res["metrics"]
    assert (res["task"], res["backbone"], res["method"]) == ("fmnist_rot90", "small_resnet", method)
    assert res["pretrained"] is True and res["pretrain"]["key"]["dataset"] == "fashion_mnist"
    assert "root" not in res["pretrain"]["key"]["data"]
    for key in ("upright_accuracy", "zeroshot_accuracy", "finetuned_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    steps = [p["step"] for p in res["curves"]["test_accuracy"]]
    offset = 2 if method in ("lambda_equitune", "canonicalize") else 0
    assert steps == [offset, offset + 1, offset + 2]
    if method == "vanilla":
        assert m["zeroshot_upright_selected"] is None
    else:
        assert m["zeroshot_invariance_error"] < 1e-4 and m["finetuned_invariance_error"] < 1e-4
    if method in ("lambda_equitune", "equizero", "canonicalize"):
        assert 0.0 <= m["zeroshot_upright_selected"] <= 1.0
    if method == "canonicalize":     # upright test images the canonicalizer leaves as they are
        for stage in ("zeroshot", "canonicalizer_phase", "finetuned"):
            assert 0.0 <= m[f"{stage}_upright_identity"] <= 1.0


def test_pretrained_weights_depend_only_on_the_pretrain_seed(synthetic_root, tmp_path):
    """The global RNG state before a run (other runs in the process, ...) must not matter."""
    states = []
    for i, noise in enumerate((1, 12345)):
        torch.manual_seed(noise)
        cfg = compose_config(*TINY_FMNIST, "method=vanilla", "task.finetune.steps=0",
                             f"task.data.root={synthetic_root}", tmp=tmp_path / str(i))
        res = json.loads(execute(cfg, tmp_path / str(i) / "run").results_path.read_text())
        states.append(torch.load(res["pretrain"]["checkpoint"], weights_only=True))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
