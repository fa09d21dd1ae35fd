"""Configs name their classes (``_target_``): every method, group and backbone yaml builds what it
names, class defaults equal the yamls', a bad target or key is one ``ConfigError`` line naming
its path, and a family refuses a method class it has no variant of."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from equiv.config import group_options
from equiv.errors import ConfigError, MissingResourceError
from equiv.groups import GroupAction, rot90
from equiv.instantiate import SUITE_KEYS, arguments, build, build_method, check, target
from tests.helpers import CONFIG_DIR, ROOT, compose_config


def node(kind: str, option: str, *overrides: str):
    """The ``kind`` node of option ``option`` as a run composes it (``${task.*}`` resolved)."""
    return compose_config(f"{kind}={option}", *overrides)[kind]


class TinyClassifier(nn.Module):
    """A backbone with the ``features``/``head`` split λ-equitune scores."""

    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.body, self.out = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), nn.Linear(4, 3)

    def features(self, x):
        return self.body(x)

    def head(self, f):
        return self.out(f)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("option", group_options(CONFIG_DIR, "method"))
def test_every_method_config_builds_its_class(option):
    method = node("method", option, "task.canonicalizer.kernel_size=3")
    model = build_method(method, TinyClassifier(), rot90(),
                         optional={"input_shape": (1, 4, 4), "in_channels": 1})
    assert type(model) is target(method, "method")
    x = torch.randn(2, 1, 4, 4)
    assert model.eval()(x).shape == (2, 3)


@pytest.mark.parametrize("option", group_options(CONFIG_DIR, "group"))
def test_every_group_config_builds(option):
    from equiv.data.nlg import WordSwap
    from equiv.experiments.scan.data import vocabularies

    group = node("group", option)
    in_vocab, out_vocab = vocabularies()
    built = build(group, "group", optional={"in_vocab": in_vocab, "out_vocab": out_vocab})
    if option.startswith("word_swap_"):                  # the LM's tokenizer turns it to ids
        assert isinstance(built, WordSwap) and built.words
    else:
        assert isinstance(built, GroupAction)
        assert built.order == {"trivial": 1, "d4": 8, "rot45": 8, "rot90": 4, "grid_rot90": 4,
                               "scan_verb4": 4}.get(option, 2)


# The run-time arguments each family's protocol gives a backbone (tiny data, no download).
RUNTIME = {
    "equiv.backbones.SmallCNN": {"in_channels": 1, "num_classes": 3,
                                 "optional": {"image_size": 8}},
    "equiv.backbones.SmallResNet": {"in_channels": 1, "num_classes": 3,
                                    "optional": {"image_size": 8}},
    "equiv.backbones.torchvision_cnn.TorchvisionCNN": {"num_classes": 3, "head": "replace",
                                                       "weights_file": None, "fetch": "X"},
    "equiv.backbones.qnets.QMLP": {"obs_shape": (4,), "n_actions": 2},
    "equiv.backbones.qnets.QCNN": {"obs_shape": (3, 5, 5), "n_actions": 4},
    "equiv.backbones.seq2seq.Seq2Seq": {"in_vocab": 16, "out_vocab": 9},
}
DOWNLOADED = ("clip_rn50", "clip_rn101", "clip_vitb32", "clip_vitb16", "gpt2")


@pytest.mark.parametrize("option", group_options(CONFIG_DIR, "backbone"))
def test_every_backbone_config_builds_or_asks_for_its_weights(option, tmp_path):
    """Downloaded weights are never replaced by random ones: without them the loader stops at
    once, naming where it looked and the fetch command; the tiny configs build for real."""
    backbone = node("backbone", option)
    name = backbone["_target_"]
    if option in DOWNLOADED:
        runtime = {"cache_dir": tmp_path, "fetch": "python scripts/prefetch.py X"}
        if name.endswith("load_clip"):
            runtime["pretrained"] = True
        with pytest.raises(MissingResourceError, match=r"not found .*fetch it with"):
            build(backbone, "backbone", optional=runtime)
        return
    if name.endswith("load_clip"):                       # tiny_clip: random weights, asked for
        loaded = build(backbone, "backbone", pretrained=False, cache_dir=tmp_path, fetch="X")
        assert loaded.checkpoint is None and isinstance(loaded.model, nn.Module)
        return
    if name.endswith("tiny_gpt2"):
        lm = build(backbone, "backbone", words=["The", " man", " woman", " was"])
        assert lm.vocab_size >= 4 and not lm.pretrained
        return
    runtime = dict(RUNTIME[name])
    model = build(backbone, "backbone", **runtime)
    assert isinstance(model, target(backbone, "backbone"))


# Where a class or factory has defaults, they are those of this yaml (defaults live in the yaml;
# the signature's copy, for library use, must not drift).
REFERENCE = [("method", m) for m in group_options(CONFIG_DIR, "method")] + [
    ("group", g) for g in ("rot90", "rot180", "hflip", "d4", "word_swap_race")] + [
    ("backbone", b) for b in ("small_cnn", "small_resnet", "tv_resnet18", "qnet_mlp",
                              "qnet_cnn", "seq2seq_lstm", "clip_rn50", "tiny_gpt2")]


def plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("kind", "option"), REFERENCE)
def test_class_defaults_are_the_yaml_defaults(kind, option):
    cfg = node(kind, option)
    params = inspect.signature(target(cfg, kind)).parameters
    compared = {k: (plain(params[k].default), v) for k, v in arguments(cfg, kind).items()
                if params[k].default is not inspect.Parameter.empty}
    assert compared and all(a == b for a, b in compared.values()), compared


def test_suite_keys_are_declared_once_and_taken_by_no_constructor():
    # ``canonicalizer`` is a sub-node the suite builds first and passes in (build_method)
    for kind in ("method", "backbone", "group"):
        for option in group_options(CONFIG_DIR, kind):
            cfg = node(kind, option)
            params = inspect.signature(target(cfg, kind)).parameters
            assert not (SUITE_KEYS[kind] - {"pretrained", "canonicalizer"}) & set(params), \
                (kind, option)


def test_unknown_target_and_keys_are_one_line_errors():
    bad = OmegaConf.create({"_target_": "equiv.backbones.NoSuchNet", "name": "x"})
    with pytest.raises(ConfigError, match=re.escape(
            "backbone._target_='equiv.backbones.NoSuchNet' cannot be imported")):
        check(bad, "backbone")
    extra = OmegaConf.create({**OmegaConf.to_container(node("backbone", "small_cnn")),
                              "width": 3, "depth": 2})
    with pytest.raises(ConfigError, match=re.escape(
            "backbone has unknown keys width, depth (backbone.width, backbone.depth) for "
            "equiv.backbones.SmallCNN; valid: channels, dropout, hidden, image_size, "
            "in_channels, num_classes")) as err:
        check(extra, "backbone")
    assert "\n" not in str(err.value)
    missing = OmegaConf.create({"_target_": "equiv.methods.Equizero", "name": "equizero"})
    message = "method: equiv.methods.Equizero cannot be called"
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(missing, "method", backbone=TinyClassifier(), action=rot90())


def test_a_user_target_is_checked_against_its_signature_in_validate():
    from equiv.runner import validate

    cfg = compose_config("backbone._target_=torch.nn.Linear", "backbone.name=linear")
    with pytest.raises(ConfigError, match=re.escape(
            "backbone has unknown keys channels, hidden, dropout (backbone.channels")):
        validate(cfg)


def test_a_method_class_without_a_sequence_variant_is_refused_before_pretraining(tmp_path):
    from equiv.runner import execute

    cfg = compose_config("task=scan_add_jump", "backbone=seq2seq_tiny",
                         "method._target_=equiv.experiments.clip.compat.AuthorsLambdaEquitune",
                         tmp=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(
            "method._target_=equiv.experiments.clip.compat.AuthorsLambdaEquitune has no "
            "seq2seq variant")):
        execute(cfg, tmp_path / "run")
    assert not (tmp_path / "cache" / "pretrained").exists()


def test_hydra_keys_do_not_enter_the_pretraining_cache_key():
    from equiv.pretraining import backbone_key

    suite = OmegaConf.to_container(node("backbone", "small_cnn"))
    assert backbone_key(suite) == {"name": "small_cnn", "pretrained": True,
                                   "channels": [16, 32], "hidden": 64, "dropout": 0.0}
    user = {**suite, "_target_": "my_models.MyNet"}
    assert backbone_key(user)["_target_"] == "my_models.MyNet"     # not the suite's weights


# --- a user's own backbone and group, from outside the package ----------------------------------

def readme_plugin() -> tuple[str, list[str]]:
    """The module and the command of README.md's "Bring your own backbone or group"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Bring your own backbone or group\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (command,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return code, shlex.split(command.replace("\\\n", " "))


def test_readme_plugs_in_a_users_backbone_and_group(tmp_path):
    """README's command as a real subprocess (with a tiny budget), its module written outside
    the package: the run uses both, and the suite's own invariance metric finds the wrapped
    model invariant under the user's group, which the user's backbone alone is not."""
    code, argv = readme_plugin()
    (tmp_path / "my_models.py").write_text(code)
    env_prefix, python, script, *args = argv
    assert (env_prefix, python, script) == ("PYTHONPATH=.", "python", "run.py")
    tiny = ["task.pretrain.epochs=1", "task.finetune.steps=6", "task.finetune.eval_every=3",
            "cpu_threads=1", f"output_root={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([".", os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, *tiny], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "out").rglob("results.json")
    res = json.loads(path.read_text())
    assert (res["backbone"], res["group"], res["method"]) == ("my_net", "half_turns", "equitune")
    assert res["config"]["backbone"]["_target_"] == "my_models.MyNet"
    assert res["pretrain"]["kind"] == "digits-my_net" and res["pretrain"]["cached"] is False
    m = res["metrics"]
    assert m["zeroshot_invariance_error"] < 1e-5 and m["finetuned_invariance_error"] < 1e-5
    assert m["upright_accuracy"] > 0.5 and m["zeroshot_upright_selected"] is None

    from equiv.methods import Vanilla
    from equiv.testing import equivariance_error

    spec = importlib.util.spec_from_file_location("my_models_check", tmp_path / "my_models.py")
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    torch.manual_seed(0)
    alone = Vanilla(user.MyNet(1, 10, 8, width=32))
    assert equivariance_error(alone, user.half_turns(), torch.randn(8, 1, 8, 8),
                              invariant=True) > 1e-3


def test_a_users_module_with_a_typo_stops_with_exit_code_2(tmp_path):
    code, argv = readme_plugin()
    (tmp_path / "my_models.py").write_text(code)
    args = [a.replace("my_models.MyNet", "my_models.MyNett") for a in argv[3:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([".", os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args,
                           f"output_root={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 2
    assert "error: backbone._target_='my_models.MyNett' cannot be imported" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "out").rglob("*.json"))
