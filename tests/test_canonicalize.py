"""Canonicalize: exactness on every group of the suite, ties, one backbone pass, prior, gradients.

The property checks run with gradients enabled (``check`` below, not ``equivariance_error``,
which runs under ``no_grad``), so that the training-mode paths (straight-through, relaxed) are
the ones being checked. Non-involutive groups with outputs the group acts on (rot90/d4 images,
``scan_verb4``, ``grid_rot90``) catch a ``g`` vs ``g⁻¹`` mistake, as
``test_inverse_mistake_is_caught`` shows.
"""

from functools import partial

import pytest
import torch
from torch import nn

from equiv.data.vocab import Vocab
from equiv.envs.symmetries import make_env_action
from equiv.groups import image_group
from equiv.groups import words as word_groups
from equiv.methods import (
    Canonicalize,
    GroupConvCanonicalizer,
    ImageViewScorer,
    TokenViewScorer,
    VectorViewScorer,
)
from equiv.testing import assert_equivariant
from tests.helpers import DenseImageModel

C, S, K, L = 2, 7, 4, 5          # channels, image side, classes, command length
IN_WORDS = ["jump", "run", "walk", "look", "left", "right", "twice", "and"]
OUT_WORDS = ["I_JUMP", "I_RUN", "I_WALK", "I_LOOK", "I_TURN_LEFT", "I_TURN_RIGHT"]
IN_VOCAB, OUT_VOCAB = Vocab(IN_WORDS), Vocab(OUT_WORDS)


pytestmark = pytest.mark.usefixtures("float64")      # exact checks (tests/conftest.py)


class ImageClassifier(nn.Module):
    """Not invariant (the head sees positions); BatchNorm makes training mode batch-dependent."""

    def __init__(self, channels=C, side=S, out=K):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1), nn.BatchNorm2d(3),
                                  nn.Tanh(), nn.Flatten())
        self.fc = nn.Linear(3 * side * side, out)

    def forward(self, x):
        return self.fc(self.body(x))


ImageToImage = partial(DenseImageModel, C, S)


class CommandModel(nn.Module):
    """Token ids ``[B, L]`` -> output-vocabulary logits ``[B, L, V_out]``, position-aware."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(len(IN_VOCAB), 8)
        self.pos = nn.Parameter(torch.randn(L, 8))
        self.out = nn.Linear(8, len(OUT_VOCAB))

    def forward(self, ids):
        h = torch.tanh(self.emb(ids) + self.pos)
        return self.out(h + h.mean(dim=1, keepdim=True))


def image_input(gen, batch):
    return torch.randn(batch, C, S, S, generator=gen)


def token_input(gen, batch):
    return torch.randint(3, len(IN_VOCAB), (batch, L), generator=gen)


def words(name):
    return lambda: getattr(word_groups, name)(IN_VOCAB, OUT_VOCAB)


IMAGE_GROUPS = ["rot90", "rot180", "hflip", "d4"]
CASES = {
    # name: (action, backbone, input, canonicalizer kinds)
    **{f"{g}-invariant": (lambda g=g: image_group(g), ImageClassifier, image_input,
                          ("groupconv", "image")) for g in IMAGE_GROUPS},
    **{f"{g}-image": (lambda g=g: image_group(g, output="image"), ImageToImage, image_input,
                      ("groupconv", "image")) for g in ("rot90", "hflip", "d4")},
    **{name: (words(name), CommandModel, token_input, ("gru", "mean"))
       for name in ("scan_verb", "scan_direction", "scan_verb4")},
    "cartpole_reflect": (lambda: make_env_action("cartpole_reflect"),
                         lambda: nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)),
                         lambda gen, b: torch.randn(b, 4, generator=gen), ("mlp",)),
    "acrobot_reflect": (lambda: make_env_action("acrobot_reflect"),
                        lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)),
                        lambda gen, b: torch.randn(b, 6, generator=gen), ("mlp",)),
    "grid_rot90": (lambda: make_env_action("grid_rot90"),
                   lambda: ImageClassifier(3, 5, 4),
                   lambda gen, b: torch.randn(b, 3, 5, 5, generator=gen), ("groupconv", "image")),
}


def canonicalizer(kind, action, case):
    if kind == "groupconv":
        pytest.importorskip("equiadapt")
        channels = 3 if case == "grid_rot90" else C
        return GroupConvCanonicalizer(action, channels, width=4, kernel_size=3, depth=2)
    if kind == "image":
        return ImageViewScorer(action, 3 if case == "grid_rot90" else C, width=4, depth=1)
    if kind in ("gru", "mean"):
        return TokenViewScorer(action, len(IN_VOCAB), dim=6, hidden=6, pool=kind)
    return VectorViewScorer(action, 4 if case == "cartpole_reflect" else 6, hidden=8)


def build(case, kind, gradient="straight_through", seed=0):
    torch.manual_seed(seed)
    make_act, make_backbone, _, _ = CASES[case]
    action = make_act()
    return Canonicalize(make_backbone(), action, canonicalizer(kind, action, case),
                        gradient=gradient, temperature=0.5)


def make_input(case, seed, batch=3):
    return CASES[case][2](torch.Generator().manual_seed(seed), batch)


def check(model, x, atol=1e-10):
    """``max_g |F(g·x) − g·F(x)|`` with gradients enabled (training paths), same random state."""
    action = model.action
    state = torch.get_rng_state()
    y = model(x).detach()
    worst = 0.0
    for g in action.elements:
        torch.set_rng_state(state)
        worst = max(worst, (model(action.act_in(x, g)).detach() - action.act_out(y, g))
                    .abs().max().item())
    assert worst <= atol, f"{action.name}: equivariance error {worst:.3e}"


COMBOS = [(case, kind) for case, spec in CASES.items() for kind in spec[3]]


@pytest.mark.parametrize("mode", ["eval", "straight_through", "relaxed"])
@pytest.mark.parametrize(("case", "kind"), COMBOS)
def test_canonicalize_is_exactly_equivariant(case, kind, mode):
    for seed in range(2):
        model = build(case, kind, "relaxed" if mode == "relaxed" else "straight_through", seed)
        model.train(mode != "eval")
        check(model, make_input(case, seed))


@pytest.mark.parametrize("case", ["rot90-invariant", "scan_verb4", "cartpole_reflect"])
def test_raw_backbone_is_not_equivariant(case):
    """The checks above are meaningful: the backbones alone are far from equivariant."""
    model = build(case, CASES[case][3][0]).backbone.eval()
    action, x = CASES[case][0](), make_input(case, 0)
    y = model(x)
    assert max((model(action.act_in(x, g)) - action.act_out(y, g)).abs().max().item()
               for g in action.elements) > 1e-3


@pytest.mark.parametrize(("case", "kind"), [("rot90-image", "groupconv"), ("d4-image", "image"),
                                            ("scan_verb4", "gru"), ("grid_rot90", "groupconv")])
def test_inverse_mistake_is_caught(case, kind, monkeypatch):
    """Mapping the canonical view's output back by ``g*`` instead of ``g*⁻¹`` must fail."""
    model = build(case, kind).eval()
    x = make_input(case, 0)
    assert_equivariant(model, model.action, x, atol=1e-10)
    monkeypatch.setattr(model.action, "inverse", lambda g: g)
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(model, model.action, x, atol=1e-10)


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_equiadapt_element_order_mistake_is_caught(group):
    """Reading equiadapt's activation of ``T`` as the score of ``T`` (not ``T⁻¹``) breaks the
    canonicalizer's equivariance, and with it the wrapper's: the index map is tested."""
    model = build(f"{group}-image", "groupconv").eval()
    x = make_input(f"{group}-image", 1)
    assert_equivariant(model, model.action, x, atol=1e-10)
    canon = model.canonicalizer
    elements = canon.action.rep_in.elements
    wrong = [elements.index(e) for e in elements]       # identity map: the score of T is a[T]
    from equiv.methods.canonicalizers import EQUIADAPT_GROUPS, equiadapt_element
    group_type, rotations = EQUIADAPT_GROUPS[elements]
    position = {equiadapt_element(j, group_type, rotations): j for j in range(len(elements))}
    canon.columns = torch.tensor([position[elements[i]] for i in wrong])
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(model, model.action, x, atol=1e-10)


def symmetric_image(case, seed):
    """An image each rotation leaves unchanged (the orbit sum of a random image)."""
    x = make_input(case, seed, 2)
    return sum(torch.rot90(x, k, dims=(-2, -1)) for k in range(4))


@pytest.mark.parametrize("mode", ["eval", "straight_through"])
@pytest.mark.parametrize("kind", ["groupconv", "image"])
def test_ties_on_symmetric_inputs_are_averaged(kind, mode):
    model = build("d4-image", kind)
    model.train(mode != "eval")
    x = symmetric_image("d4-image", 0)            # stabiliser: the four rotations of d4
    sel = model.selection(x)
    assert sel.example.tolist() == [0] * 4 + [1] * 4 or len(sel.example) == 16
    check(model, x)
    check(model, torch.cat([x, make_input("d4-image", 3, 2)]))     # ties next to non-ties


def test_command_without_the_verbs_ties_everywhere():
    """``scan_verb4`` leaves a command without verbs unchanged: all four views tie."""
    model = build("scan_verb4", "gru").eval()
    ids = torch.tensor([IN_VOCAB.ids(["left", "twice", "and", "right", "left"]),
                        IN_VOCAB.ids(["jump", "left", "and", "run", "twice"])])
    sel = model.selection(ids)
    assert sel.example.tolist().count(0) == 4 and sel.example.tolist().count(1) == 1
    check(model, ids)


class RowCounter(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize(("mode", "rows"), [("eval", 1), ("straight_through", 1),
                                            ("relaxed", 4)])
def test_backbone_runs_on_one_row_per_input_without_ties(mode, rows):
    model = build("rot90-invariant", "groupconv", "relaxed" if mode == "relaxed" else
                  "straight_through")
    model.backbone = RowCounter(model.backbone)
    model.train(mode != "eval")
    x = make_input("rot90-invariant", 0, 5)
    assert model.selection(x).unique
    model(x)
    assert model.backbone.calls == [5 * rows]


def upright_images(gen, n):
    """Images with an orientation: a bright top row over noise."""
    x = 0.3 * torch.randn(n, C, S, S, generator=gen)
    x[..., 0, :] += 2.0
    return x


@pytest.mark.parametrize("kind", ["groupconv", "image"])
def test_prior_loss_teaches_the_canonicalizer_the_upright_view(kind):
    model = build("rot90-invariant", kind)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.canonicalizer.parameters(), lr=3e-2)
    for _ in range(30):
        loss = model.prior_loss(upright_images(gen, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = upright_images(gen, 32)
    assert model.identity_share(test) == 1.0
    g = torch.arange(32) % 4
    chosen, _ = model.select(model.action.act_in(test, g))
    assert torch.equal(chosen, model.action.inverse(g))     # rotated back to upright


def test_prior_loss_is_equiadapts():
    pytest.importorskip("equiadapt")
    from equiadapt.common.basecanonicalization import DiscreteGroupCanonicalization

    model = build("d4-invariant", "groupconv")
    x = make_input("d4-invariant", 0, 4)
    reference = DiscreteGroupCanonicalization(nn.Identity())
    reference.canonicalization_info_dict = {"group_activations": model.scores(x).T}
    reference.device = x.device
    assert torch.allclose(model.prior_loss(x), reference.get_prior_regularization_loss(),
                          rtol=0, atol=1e-12)


@pytest.mark.parametrize("gradient", ["straight_through", "relaxed"])
@pytest.mark.parametrize(("case", "kind"), [("rot90-invariant", "groupconv"),
                                            ("scan_verb4", "gru"), ("acrobot_reflect", "mlp")])
def test_both_gradient_modes_reach_canonicalizer_and_backbone(case, kind, gradient):
    model = build(case, kind, gradient).train()
    model(make_input(case, 0, 4)).square().sum().backward()
    for part in (model.canonicalizer, model.backbone):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0


def test_eval_and_straight_through_agree_in_value():
    model = build("rot90-invariant", "image")
    x = make_input("rot90-invariant", 0, 4)
    model.eval()
    ev = model(x)
    model.backbone.eval()                          # BatchNorm: same statistics on both sides
    model.canonicalizer.train()
    model.training = True
    assert torch.equal(model(x).detach(), ev)


def test_exact_filter_turns_match_equiadapt_up_to_its_interpolation():
    """Our filter rotation is equiadapt's in meaning: equal to kornia's warp within its float32
    interpolation error, for all four layer types."""
    pytest.importorskip("equiadapt")
    from equiadapt.images.canonicalization_networks import custom_group_equivariant_layers as eq

    from equiv.methods.canonicalizers import _exact_layers

    torch.set_default_dtype(torch.float32)
    pairs = [("get_rotated_weights", eq.RotationEquivariantConvLift, 0, 4),
             ("get_rotoreflected_weights", eq.RotoReflectionEquivariantConvLift, 1, 4),
             ("get_rotated_permuted_weights", eq.RotationEquivariantConv, 2, 4),
             ("get_rotoreflected_permuted_weights", eq.RotoReflectionEquivariantConv, 3, 4),
             ("get_rotated_weights", eq.RotationEquivariantConvLift, 0, 2),
             ("get_rotoreflected_weights", eq.RotoReflectionEquivariantConvLift, 1, 1)]
    exact = _exact_layers()
    for method, original, index, rotations in pairs:
        torch.manual_seed(0)
        theirs = original(3, 2, 5, rotations, device="cpu")
        ours = exact[index](3, 2, 5, rotations, device="cpu")
        ours.load_state_dict(theirs.state_dict())
        a = getattr(theirs, method)(theirs.weights, rotations)
        b = getattr(ours, method)(ours.weights, rotations)
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-5 * a.abs().max().item()


def test_seeded_construction_leaves_the_global_stream_alone():
    pytest.importorskip("equiadapt")
    action = image_group("rot90")
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = GroupConvCanonicalizer(action, C, seed=3)
    after = torch.rand(1)
    b = GroupConvCanonicalizer(action, C, seed=3)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_options_are_refused():
    action = image_group("rot90")
    with pytest.raises(ValueError, match="gradient"):
        Canonicalize(nn.Identity(), action, ImageViewScorer(action, C), gradient="gumbel")
    with pytest.raises(ValueError, match="scores 8 elements"):
        Canonicalize(nn.Identity(), action, ImageViewScorer(image_group("d4"), C))
    with pytest.raises(ValueError, match="image groups"):
        GroupConvCanonicalizer(make_env_action("cartpole_reflect"), 4)      # before any import
