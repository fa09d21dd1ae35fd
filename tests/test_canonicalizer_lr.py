"""``method.canonicalizer_lr``: the canonicalizer finetunes at its own learning rate, in every
family that runs canonicalize; null keeps one optimizer group at the task's lr."""

import json

import pytest
import torch
from torch import nn

from equiv.runner import execute
from equiv.training import with_own_lr
from tests.helpers import TINY, TINY_CANONICALIZE, compose_config
from tests.test_canonicalize_scan import CANON_TINY
from tests.test_clip_experiment import TINY_CANONICALIZE as CLIP_CANONICALIZE
from tests.test_clip_experiment import TINY_CLIP
from tests.test_dqn_experiment import CANONICALIZE_DQN, dqn_tiny
from tests.test_scan_experiment import SCAN_TINY

OWN_LR = 0.0123                    # no task uses it: the group at this lr is the canonicalizer's

FAMILIES = {
    "image": [*TINY, "method=canonicalize", *TINY_CANONICALIZE],
    "clip": [*TINY_CLIP, "method=canonicalize", *CLIP_CANONICALIZE],
    "scan": [*SCAN_TINY, *CANON_TINY],
    "dqn": [*dqn_tiny("gridworld"), "method=canonicalize", *CANONICALIZE_DQN],
}


@pytest.fixture
def optimizers(monkeypatch):
    """Every optimizer built while the test runs."""
    built: list[torch.optim.Optimizer] = []
    original = torch.optim.Optimizer.__init__

    def recording(self, params, defaults):
        original(self, params, defaults)
        built.append(self)

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", recording)
    return built


def run(tmp_path, overrides):
    cfg = compose_config(*overrides, tmp=tmp_path)
    return json.loads(execute(cfg, tmp_path / "run").results_path.read_text())


def test_without_an_lr_the_parameters_stay_one_list():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    assert with_own_lr([a], [b], None) == [a, b]
    assert with_own_lr([a], [b], 0.5) == [{"params": [a]}, {"params": [b], "lr": 0.5}]
    assert with_own_lr([a], [], 0.5) == [a]                   # a frozen canonicalizer


@pytest.mark.parametrize("family", FAMILIES)
def test_finetuning_trains_the_canonicalizer_at_its_own_lr(family, tmp_path, optimizers):
    res = run(tmp_path, [*FAMILIES[family], f"method.canonicalizer_lr={OWN_LR}"])
    own = [(opt, g) for opt in optimizers for g in opt.param_groups if g["lr"] == OWN_LR]
    assert len(own) == 1, "one optimizer (finetuning's) has one group at canonicalizer_lr"
    finetuning, group = own[0]
    others = [g for g in finetuning.param_groups if g is not group]
    assert others and all(g["lr"] != OWN_LR and g["params"] for g in others)
    assert group["params"]
    if "added" in res.get("parameters", {}) and family != "clip":    # image, SCAN: the method's
        assert sum(p.numel() for p in group["params"]) == res["parameters"]["added"]


@pytest.mark.parametrize("family", ["image", "scan"])
def test_null_lr_keeps_one_group(family, tmp_path, optimizers):
    run(tmp_path, FAMILIES[family])
    assert all(len(opt.param_groups) == 1 for opt in optimizers)

