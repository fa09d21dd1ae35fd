"""Every method × every action on random float64 backbones is exactly equivariant (or invariant).

Non-involutive groups (C4 and D4 with image outputs, a 3-cycle of tokens) are included so that
using ``g`` where ``g⁻¹`` belongs fails; ``test_inverse_mistake_is_caught`` proves that it does.
"""

from functools import partial

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from equiv.groups import d4, hflip, image_group, permutation, rot90, rot180, trivial
from equiv.methods import Equitune, Equizero, LambdaEquitune, LambdaNet, Vanilla
from equiv.testing import assert_equivariant, assert_invariant, equivariance_error
from tests.helpers import DenseImageModel

C, S, K, V, L = 2, 5, 4, 6, 4      # channels, image side, classes, vocabulary, sequence length


pytestmark = pytest.mark.usefixtures("float64")          # tests/conftest.py


class ImageClassifier(nn.Module):
    """Deliberately non-invariant: the linear head sees pixel positions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, 3, 3, padding=1)
        self.fc = nn.Linear(3 * S * S, K)

    def features(self, x):
        return torch.tanh(self.conv(x)).flatten(1)

    def head(self, f):
        return self.fc(f)

    def forward(self, x):
        return self.head(self.features(x))


ImageToImage = partial(DenseImageModel, C, S)


class TokenModel(nn.Module):
    """Non-equivariant sequence model: token + position embeddings, logits over the vocabulary."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 8)
        self.pos = nn.Parameter(torch.randn(L, 8))
        self.out = nn.Linear(8, V)

    def forward(self, ids):
        h = torch.tanh(self.emb(ids) + self.pos)
        return self.out(h + h.mean(dim=1, keepdim=True))


class TokenLambda(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 5)
        self.fc = nn.Linear(5 * L, 1)

    def forward(self, ids):
        return self.fc(self.emb(ids).flatten(1)).squeeze(-1)


CASES = {
    # name: (action factory, backbone factory, λ-net factory, input factory, invariant?)
    "rot90-invariant": (rot90, ImageClassifier, "image", "image", True),
    "rot180-invariant": (rot180, ImageClassifier, "image", "image", True),
    "hflip-invariant": (hflip, ImageClassifier, "image", "image", True),
    "d4-invariant": (d4, ImageClassifier, "image", "image", True),
    "rot90-image": (lambda: rot90(output="image"), ImageToImage, "image", "image", False),
    "d4-image": (lambda: d4(output="image"), ImageToImage, "image", "image", False),
    "hflip-image": (lambda: hflip(output="image"), ImageToImage, "image", "image", False),
    "perm-3cycle": (lambda: permutation(in_cycles=[[1, 2, 3]], in_size=V,
                                        out_cycles=[[1, 2, 3]], out_size=V),
                    TokenModel, "token", "token", False),
    "perm-6": (lambda: permutation(in_cycles=[[1, 2, 3], [4, 5]], in_size=V,
                                   out_cycles=[[0, 2, 4]], out_size=V),
               TokenModel, "token", "token", False),
    "perm-invariant": (lambda: permutation(in_cycles=[[0, 5, 1]], in_size=V),
                       TokenModel, "token", "token", True),
    "trivial": (trivial, ImageClassifier, "image", "image", False),
}


def make_input(kind, seed, batch):
    gen = torch.Generator().manual_seed(seed)
    if kind == "token":
        return torch.randint(0, V, (batch, L), generator=gen)
    return torch.randn(batch, C, S, S, generator=gen)


def make_lambda(kind):
    return TokenLambda() if kind == "token" else LambdaNet(C * S * S, hidden=16, dropout=0.0)


def build(method, case):
    make_act, make_backbone, lam_kind, _, _ = CASES[case]
    action, backbone = make_act(), make_backbone()
    if method == "equitune":
        return Equitune(backbone, action)
    if method.startswith("lambda"):
        _, norm, source = method.split("-")
        if source == "features":
            lam = LambdaNet(3 * S * S, hidden=16, dropout=0.0)
            return LambdaEquitune(backbone, action, lam, normalization=norm,
                                  lambda_input="features")
        return LambdaEquitune(backbone, action, make_lambda(lam_kind), normalization=norm,
                              lambda_input="input")
    if method.startswith("equizero"):
        _, proxy, surrogate = method.split("-")
        return Equizero(backbone, action, proxy, surrogate=surrogate)
    raise AssertionError(method)


METHODS = ["equitune", "lambda-softplus-input", "lambda-softmax-input", "lambda-softplus-features",
           "equizero-entropy-equitune", "equizero-neg_max_prob-identity",
           "equizero-neg_max_logit-equitune"]


def check(model, case, x):
    action, invariant = model.action, CASES[case][4]
    if invariant:
        assert_invariant(model, action, x, atol=1e-10)
    else:
        assert_equivariant(model, action, x, atol=1e-10)


COMBINATIONS = [(m, c) for m in METHODS for c in sorted(CASES)
                if "features" not in m or hasattr(CASES[c][1], "features")]


@pytest.mark.parametrize(("method", "case"), COMBINATIONS)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_method_is_equivariant(method, case, seed, batch):
    torch.manual_seed(seed)
    model = build(method, case).eval()
    check(model, case, make_input(CASES[case][3], seed, batch))


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "trivial"))
def test_random_backbone_is_not_equivariant(case):
    """The property tests above are meaningful: the raw backbones are far from equivariant."""
    torch.manual_seed(0)
    model = Vanilla(CASES[case][1]())
    action = CASES[case][0]()
    x = make_input(CASES[case][3], 0, 3)
    assert equivariance_error(model, action, x, invariant=CASES[case][4]) > 1e-3


class BrokenEquitune(Equitune):
    """Maps views back by ``g`` instead of ``g⁻¹``: the classic mistake."""

    def align(self, y):
        g = self.action.stacked_elements(y.shape[0] // self.action.order, y.device)
        return self.action.rep_out.apply(y, g).view(self.action.order, -1, *y.shape[1:])


@pytest.mark.parametrize("case", ["rot90-image", "d4-image", "perm-3cycle", "perm-6"])
def test_inverse_mistake_is_caught(case):
    torch.manual_seed(0)
    model = BrokenEquitune(CASES[case][1](), CASES[case][0]())
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(model, model.action, make_input(CASES[case][3], 0, 2))


class PointwiseImage(nn.Module):
    """Exactly equivariant to any pixel permutation (1×1 convolution)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, 3, 1)

    def forward(self, x):
        return torch.tanh(self.conv(x))


class PooledClassifier(PointwiseImage):
    def forward(self, x):
        return super().forward(x).mean(dim=(-2, -1))


class CopyTokens(nn.Module):
    """Exactly permutation-equivariant: scores from the token and the bag of tokens."""

    def forward(self, ids):
        onehot = nn.functional.one_hot(ids, V).double()
        return 2.0 * onehot + 0.5 * onehot.mean(dim=1, keepdim=True)


@pytest.mark.parametrize("name", ["rot90", "rot180", "hflip", "d4"])
def test_equivariant_backbone_has_zero_error_under_vanilla(name):
    torch.manual_seed(0)
    x = make_input("image", 0, 3)
    dense, pooled = Vanilla(PointwiseImage()), Vanilla(PooledClassifier())
    assert equivariance_error(dense, image_group(name, output="image"), x) == 0.0
    assert equivariance_error(pooled, image_group(name), x) <= 1e-15


def test_equivariant_token_backbone_has_zero_error_under_vanilla():
    action = permutation(in_cycles=[[1, 2, 3]], in_size=V,
                         out_cycles=[[1, 2, 3]], out_size=V)
    x = make_input("token", 0, 4)
    assert equivariance_error(Vanilla(CopyTokens()), action, x) == 0.0
