"""What each method computes, beyond equivariance: special cases, gradients, batching."""

import pytest
import torch
from torch import nn

from equiv.groups import d4, permutation, rot90
from equiv.methods import Equitune, Equizero, LambdaEquitune, LambdaNet, Vanilla


class CountingBackbone(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.rows = inner, 0, []

    def forward(self, x):
        self.calls += 1
        self.rows.append(x.shape[0])
        return self.inner(x)


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5)).double()


@pytest.fixture
def x():
    return torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def views(backbone, action, x):
    return torch.stack([backbone(action.act_in(x, g)) for g in action.elements])


@pytest.mark.parametrize("make", [
    lambda b, a: Equitune(b, a),
    lambda b, a: LambdaEquitune(b, a, LambdaNet(32, hidden=8).double(), lambda_input="input"),
    lambda b, a: Equizero(b, a, "entropy"),
])
def test_one_batched_backbone_call(make, x):
    backbone = CountingBackbone(classifier())
    model = make(backbone, d4())
    model(x)
    assert backbone.calls == 1 and backbone.rows == [8 * 3]


def test_chunking_gives_the_same_result(x):
    backbone = CountingBackbone(classifier())
    full = Equitune(backbone, d4())(x)
    chunked = Equitune(backbone, d4(), chunk_size=5)(x)
    assert torch.allclose(full, chunked, atol=1e-12)
    assert backbone.rows[1:] == [5, 5, 5, 5, 4]


def test_equitune_is_the_group_mean(x):
    backbone, action = classifier(), rot90()
    assert torch.allclose(Equitune(backbone, action)(x), views(backbone, action, x).mean(0))


class ConstantScore(nn.Module):
    def forward(self, v):
        return torch.full(v.shape[:1], 0.3, dtype=v.dtype)


@pytest.mark.parametrize("norm", ["softplus", "softmax"])
def test_constant_lambda_is_equitune(norm, x):
    backbone, action = classifier(), d4()
    lam = LambdaEquitune(backbone, action, ConstantScore(), normalization=norm,
                         lambda_input="input")
    assert torch.allclose(lam(x), Equitune(backbone, action)(x), atol=1e-12)


def test_lambda_weights_are_a_convex_combination(x):
    torch.manual_seed(3)
    model = LambdaEquitune(classifier(), rot90(), LambdaNet(32, 8).double(),
                           lambda_input="input").eval()
    w = model.lambda_weights(x)
    assert w.shape == (3, 4) and (w > 0).all()
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    expected = (w.T.unsqueeze(-1) * views(model.backbone, model.action, x)).sum(0)
    assert torch.allclose(model(x), expected, atol=1e-12)


def test_equizero_picks_the_lowest_proxy(x):
    backbone, action = classifier(), rot90()
    y = views(backbone, action, x)                                   # [G, B, K]
    ent = -(y.log_softmax(-1).exp() * y.log_softmax(-1)).sum(-1)     # [G, B]
    expected = y[ent.argmin(0), torch.arange(3)]
    assert torch.allclose(Equizero(backbone, action, "entropy").eval()(x), expected)
    conf = y.softmax(-1).amax(-1)
    expected = y[conf.argmax(0), torch.arange(3)]
    assert torch.allclose(Equizero(backbone, action, "neg_max_prob").eval()(x), expected)


@pytest.mark.parametrize("surrogate", ["equitune", "identity"])
def test_equizero_straight_through_gradient(surrogate, x):
    action = rot90()
    model = Equizero(classifier(), action, "neg_max_logit", surrogate=surrogate).train()
    out = model(x)
    assert torch.allclose(out, model.eval()(x), atol=1e-12)      # forward value is equizero's
    out.sum().backward()
    grad = model.backbone[1].weight.grad.clone()
    model.zero_grad()
    ref = Equitune(model.backbone, action)(x) if surrogate == "equitune" else model.backbone(x)
    ref.sum().backward()
    assert torch.allclose(grad, model.backbone[1].weight.grad, atol=1e-12)


def test_vanilla_is_the_backbone(x):
    backbone = classifier()
    assert torch.equal(Vanilla(backbone)(x), backbone(x))


def test_bad_options_are_rejected():
    backbone, action = classifier(), rot90()
    with pytest.raises(ValueError, match="unknown proxy"):
        Equizero(backbone, action, "nope")
    with pytest.raises(ValueError, match="surrogate"):
        Equizero(backbone, action, "entropy", surrogate="nope")
    with pytest.raises(ValueError, match="normalization"):
        LambdaEquitune(backbone, action, ConstantScore(), normalization="nope",
                       lambda_input="input")
    with pytest.raises(ValueError, match="features"):
        LambdaEquitune(backbone, action, ConstantScore(), lambda_input="features")


def test_equizero_averages_tied_views():
    """An input fixed by the group has identical views; equizero must average, not pick one,
    or ``F(g·x) = F(x) ≠ g·F(x)`` for the output action."""
    action = permutation(in_cycles=[[1, 2, 3]], in_size=6,
                         out_cycles=[[1, 2, 3]], out_size=6)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Embedding(6, 6), nn.Flatten(), nn.Linear(12, 6)).double()
    ids = torch.tensor([[0, 4], [5, 5]])                       # no token of the cycle: stabilised
    out = Equizero(backbone, action, "entropy").eval()(ids)
    assert torch.allclose(out, Equitune(backbone, action)(ids), atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 10), (6, 4, 10)])
def test_proxies_match_their_definitions(shape):
    """The written-out proxies equal the textbook formulas, per example (positions averaged)."""
    from equiv.methods.equizero import entropy, neg_max_logit, neg_max_prob

    y = torch.randn(*shape, dtype=torch.float64) * 3
    logp = y.log_softmax(-1)
    per_example = lambda v: v.reshape(shape[0], -1).mean(1)  # noqa: E731
    torch.testing.assert_close(entropy(y), per_example(-(logp.exp() * logp).sum(-1)))
    torch.testing.assert_close(neg_max_prob(y), per_example(-logp.exp().amax(-1)))
    torch.testing.assert_close(neg_max_logit(y), per_example(-y.amax(-1)))
