"""Every Q-value symmetrizer is exactly equivariant under every environment symmetry, on random
float64 Q-networks: ``Q(g·s) = g·Q(s)`` with ``g`` permuting the actions.

``grid_rot90`` has order 4, so a wrapper that maps actions back by ``g`` instead of ``g⁻¹``
fails (``test_inverse_mistake_is_caught``).
"""

import pytest
import torch

from equiv.backbones.qnets import QCNN, QMLP
from equiv.envs import make_env_action
from equiv.methods import Equitune, Equizero, LambdaEquitune, LambdaNet, Vanilla
from equiv.testing import assert_equivariant, equivariance_error

SYMMETRIES = {   # name: (Q-network factory, observation sampler)
    "grid_rot90": (lambda: QCNN((3, 5, 5), 4, channels=(4,), hidden=8),
                   lambda gen, b: torch.rand(b, 3, 5, 5, generator=gen)),
    "cartpole_reflect": (lambda: QMLP((4,), 2, hidden=(16,)),
                         lambda gen, b: torch.randn(b, 4, generator=gen)),
    "acrobot_reflect": (lambda: QMLP((6,), 3, hidden=(16,)),
                        lambda gen, b: torch.randn(b, 6, generator=gen)),
}
METHODS = ["equitune", "lambda-softplus", "lambda-softmax", "equizero-equitune",
           "equizero-identity"]


pytestmark = pytest.mark.usefixtures("float64")          # tests/conftest.py


def build(method, name):
    qnet, action = SYMMETRIES[name][0](), make_env_action(name)
    if method == "equitune":
        return Equitune(qnet, action)
    if method.startswith("lambda"):
        lam = LambdaNet(qnet.feature_dim, hidden=8, dropout=0.0)
        return LambdaEquitune(qnet, action, lam, normalization=method.split("-")[1],
                              lambda_input="features")
    return Equizero(qnet, action, "neg_max_logit", surrogate=method.split("-")[1])


@pytest.mark.parametrize("name", sorted(SYMMETRIES))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_q_values_are_equivariant(method, name, seed):
    torch.manual_seed(seed)
    model = build(method, name).eval()
    obs = SYMMETRIES[name][1](torch.Generator().manual_seed(seed), 4)
    assert_equivariant(model, model.action, obs, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SYMMETRIES))
def test_random_q_network_is_not_equivariant(name):
    torch.manual_seed(0)
    qnet = SYMMETRIES[name][0]()
    obs = SYMMETRIES[name][1](torch.Generator().manual_seed(0), 4)
    assert equivariance_error(Vanilla(qnet, make_env_action(name)), make_env_action(name),
                              obs) > 1e-3


class BrokenEquitune(Equitune):
    """Maps the views' Q-values back by ``g`` instead of ``g⁻¹``."""

    def align(self, y):
        g = self.action.stacked_elements(y.shape[0] // self.action.order, y.device)
        return self.action.rep_out.apply(y, g).view(self.action.order, -1, *y.shape[1:])


def test_inverse_mistake_is_caught():
    torch.manual_seed(0)
    model = BrokenEquitune(SYMMETRIES["grid_rot90"][0](), make_env_action("grid_rot90"))
    obs = SYMMETRIES["grid_rot90"][1](torch.Generator().manual_seed(0), 3)
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(model, model.action, obs)


def test_equizero_acts_like_the_best_view():
    """Equizero's greedy action is g*⁻¹ of the best view's greedy action (highest max-Q)."""
    torch.manual_seed(0)
    model = build("equizero-equitune", "grid_rot90").eval()
    obs = SYMMETRIES["grid_rot90"][1](torch.Generator().manual_seed(3), 6)
    action = model.action
    views = torch.stack([model.backbone(action.act_in(obs, g)) for g in action.elements])
    best = views.amax(-1).argmax(0)                                   # [B]
    chosen = views[best, torch.arange(len(obs))]
    expected = action.act_out(chosen, action.inverse(best))
    assert torch.allclose(model(obs), expected)


def test_chosen_surrogate_trains_the_selected_view():
    """``surrogate='chosen'`` (the DQN tasks' equizero): in training mode the output is the
    equizero output itself, and its gradient is that of the selected view g*⁻¹·Q(g*·s)."""
    torch.manual_seed(0)
    qnet, action = SYMMETRIES["grid_rot90"][0](), make_env_action("grid_rot90")
    model = Equizero(qnet, action, "neg_max_logit", surrogate="chosen").train()
    obs = SYMMETRIES["grid_rot90"][1](torch.Generator().manual_seed(1), 5)
    out = model(obs)
    out.square().sum().backward()
    got = [p.grad.clone() for p in qnet.parameters()]
    qnet.zero_grad()
    best, _ = model.select(obs)
    views = torch.stack([action.act_out(qnet(action.act_in(obs, g)), action.inverse(g))
                         for g in action.elements])
    expected = views[best, torch.arange(len(obs))]
    assert torch.allclose(out, expected)
    expected.square().sum().backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(got, qnet.parameters(), strict=True))
