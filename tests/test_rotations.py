"""C8 (``rot45``): turns by multiples of 45° on a pixel grid, only approximately a group action.

Exact where a pixel grid allows it: the quarter turns C4 ⊂ C8 compose bit for bit (float32 and
float64), and every method is exactly equivariant under them (float64, 1e-10, in evaluation and
training mode). The odd elements interpolate: their errors are measured on smooth images against
the bounds stated here (about 3× the largest value measured), and a ``g`` vs ``g⁻¹`` mistake
must exceed the bound. The pixel-exact groups keep their own tests (``test_groups.py``,
``test_methods_equivariance.py``, ``test_canonicalize.py``).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equiv.groups import d4, image_group, rot45, rot90, rotations
from equiv.groups.rotations import GridRotation, exact_elements, interpolation_table
from equiv.methods import (
    Canonicalize,
    Equitune,
    ImageViewScorer,
    LambdaEquitune,
    LambdaNet,
    SteerableCanonicalizer,
)
from equiv.testing import (
    assert_equivariant,
    assert_invariant,
    composition_error,
    equivariance_error,
)
from tests.helpers import IMAGE_METHOD_CONFIGS, method_from_config
from tests.test_canonicalize import C, ImageClassifier, ImageToImage, S
from tests.test_fashion_mnist import tiny_resnet

QUARTER_TURNS = (0, 2, 4, 6)
SMOOTH = 20                        # side of the smooth test images
# Bounds on smooth images (σ = 3 px bumps inside the disc; largest measured value in brackets).
COMPOSITION_BOUND = 0.3            # |a(g, a(h, x)) − a(gh, x)|          [0.093]
INVARIANT_BOUND = 1e-2             # equitune, λ-equitune, class scores  [2.6e-3]
DENSE_BOUND = 4e-2                 # equitune, dense outputs              [1.3e-2]
MUTATION_FLOOR = 0.2               # the g vs g⁻¹ mistake                 [smallest: 0.42]


def random_images(seed, batch=3, side=S, channels=C, dtype=None):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, side, side, generator=gen, dtype=dtype)


def smooth_images(seed, batch=3, channels=C, sigma=3.0):
    """Two Gaussian bumps per channel, well inside the inscribed disc (so the mask cuts
    nothing): what bilinear interpolation handles well."""
    gen = torch.Generator().manual_seed(seed)
    centred = torch.arange(SMOOTH) - (SMOOTH - 1) / 2
    y, x = centred[:, None], centred[None, :]
    out = torch.zeros(batch, channels, SMOOTH, SMOOTH)
    for _ in range(2):
        r, t, a = torch.rand(3, batch, channels, 1, 1, generator=gen)
        r, t, a = r * SMOOTH / 5, t * 6.3, a + 0.5
        out += a * torch.exp(-((y - r * t.cos()) ** 2 + (x - r * t.sin()) ** 2) / (2 * sigma**2))
    return out


# --- the action itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("side", [7, 8])
def test_quarter_turns_compose_bit_for_bit(dtype, side):
    """``a(g, a(h, x)) == a(gh, x)`` exactly whenever ``g`` or ``h`` is a quarter turn, on any
    image: the interpolation tables commute with ``torch.rot90`` by construction."""
    action = rot45(output="image")
    x = random_images(0, side=side, dtype=dtype)
    for g in action.elements:
        for h in action.elements:
            if g % 2 and h % 2:
                continue
            assert torch.equal(action.act_in(action.act_in(x, h), g),
                               action.act_in(x, action.compose(g, h))), (g, h)


@pytest.mark.parametrize("side", [7, 8])
def test_elements_are_masked_turns(float64, side):
    action = rot45()
    x = random_images(1, side=side)
    masked = action.act_in(x, 0)
    centred = torch.arange(side) - (side - 1) / 2
    inside = centred[:, None] ** 2 + centred[None, :] ** 2 <= (side / 2) ** 2
    assert torch.equal(masked, torch.where(inside, x, 0.0))
    assert not inside.all() and torch.equal(action.act_in(masked, 0), masked)
    for k in range(4):
        assert torch.equal(action.act_in(x, 2 * k), torch.rot90(masked, k, dims=(-2, -1)))
    stacked = action.act_in_all(x)
    for g in action.elements:
        rows = action.act_in(x, torch.full((len(x),), g))
        assert torch.equal(stacked[g * len(x):(g + 1) * len(x)], rows)
    mixed = torch.tensor([1, 6, 3])
    assert torch.equal(action.act_in(x, mixed),
                       torch.stack([action.act_in(x[i:i + 1], int(g))[0]
                                    for i, g in enumerate(mixed)]))


def test_interpolation_is_bilinear_sampling_of_the_turned_grid(float64):
    """The table is a real 45° turn (not only one that commutes with rot90): torch's
    ``grid_sample`` at the same points, counter-clockwise like ``torch.rot90``."""
    side = 9
    x = random_images(2, side=side)
    sources, weights = interpolation_table(side, torch.pi / 4)
    flat = F.pad(x.reshape(*x.shape[:2], -1), (0, 1))
    ours = (flat[..., sources] * weights).sum(-1).view_as(x)
    centred = torch.arange(side) - (side - 1) / 2
    y, z = torch.meshgrid(centred, centred, indexing="ij")
    c = s = 0.5 ** 0.5
    grid = torch.stack([-s * y + c * z, c * y + s * z], -1) / ((side - 1) / 2)   # (col, row)
    reference = F.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear",
                              padding_mode="zeros", align_corners=True)
    assert (ours - reference).abs().max().item() < 1e-12


def test_composition_error_exact_groups_zero_rot45_bounded(float64):
    """Zero for the pixel permutations; on smooth images two 45° turns are a quarter turn
    within the bound, turning the wrong way (the odd elements' inverses) is far off, and
    on white noise the action is far from a group action."""
    assert composition_error(rot90(output="image"), random_images(3)) == 0.0
    assert composition_error(d4(), random_images(3)) == 0.0
    action = rot45()
    for seed in range(3):
        x = smooth_images(seed)
        assert composition_error(action, x) < COMPOSITION_BOUND
        twice = action.act_in(action.act_in(x, 1), 1)
        assert (twice - action.act_in(x, 6)).abs().max().item() > 3 * COMPOSITION_BOUND
    assert composition_error(action, random_images(3, side=SMOOTH)) > 1.0


def test_bad_uses_are_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        rotations(6)
    with pytest.raises(ValueError, match="square images"):
        rot45().act_in(torch.zeros(1, 1, 4, 5), 1)
    assert image_group("rot45").acts_like(rot45()) and not rot45().acts_like(rotations(16))
    assert exact_elements(rot45()) == QUARTER_TURNS and exact_elements(rot90()) is None
    assert GridRotation(8) == rot45(output="image").rep_out


# --- every method: exact under the quarter turns, bounded under the others ----------------------

def canonicalize(action, kind, gradient="straight_through"):
    scorer = (SteerableCanonicalizer(action, C, width=3, kernel_size=3) if kind == "steerable"
              else ImageViewScorer(action, C, width=4, depth=1))
    backbone = ImageClassifier() if action.invariant_output else ImageToImage()
    return Canonicalize(backbone, action, scorer, gradient=gradient, temperature=0.5)


@pytest.mark.parametrize("method", sorted(IMAGE_METHOD_CONFIGS))
def test_methods_are_exact_under_the_quarter_turns(float64, method):
    """Class scores of the residual CNN (12 px) and dense outputs (7 px: an odd side)."""
    for seed in range(2):
        torch.manual_seed(seed)
        action = rot45()
        model = method_from_config(IMAGE_METHOD_CONFIGS[method], tiny_resnet(), action,
                                   (1, 12, 12)).eval()
        x = random_images(seed, side=12, channels=1)
        assert_invariant(model, action, x, atol=1e-10, elements=QUARTER_TURNS)
        assert equivariance_error(model.backbone, action, x, QUARTER_TURNS, invariant=True) > 1e-3
        if "features" in method:                   # needs a backbone with features
            continue
        action = rot45(output="image")
        model = method_from_config(IMAGE_METHOD_CONFIGS[method], ImageToImage(), action,
                                   (C, S, S)).eval()
        assert_equivariant(model, action, random_images(seed), atol=1e-10,
                           elements=QUARTER_TURNS)
        assert equivariance_error(model.backbone, action, random_images(seed),
                                  QUARTER_TURNS) > 1e-3


def check_quarter_turns(model, x, atol=1e-10):
    """``test_canonicalize.check`` over the quarter turns: gradients enabled (the training
    paths), every call from the same random state."""
    action, state = model.action, torch.get_rng_state()
    y = model(x).detach()
    for g in QUARTER_TURNS:
        torch.set_rng_state(state)
        err = (model(action.act_in(x, g)).detach() - action.act_out(y, g)).abs().max().item()
        assert err <= atol, f"element {g}: equivariance error {err:.3e}"


@pytest.mark.parametrize("mode", ["eval", "straight_through", "relaxed"])
@pytest.mark.parametrize("kind", ["steerable", "image"])
@pytest.mark.parametrize("output", ["invariant", "image"])
def test_canonicalize_is_exact_under_the_quarter_turns(float64, output, kind, mode):
    """Evaluation and both training paths (BatchNorm in training mode too)."""
    if kind == "steerable":
        pytest.importorskip("e2cnn")
    action = rot45(output=output)
    for seed in range(2):
        torch.manual_seed(seed)
        model = canonicalize(action, kind, "relaxed" if mode == "relaxed" else "straight_through")
        model.train(mode != "eval")
        check_quarter_turns(model, random_images(seed))


def test_canonicalize_inverse_mistake_is_caught_by_quarter_turns(float64, monkeypatch):
    """Mapping the canonical view's output back by ``g*`` instead of ``g*⁻¹`` fails already on
    the exact elements."""
    pytest.importorskip("e2cnn")
    torch.manual_seed(0)
    model = canonicalize(rot45(output="image"), "steerable").eval()
    check_quarter_turns(model, random_images(0))
    monkeypatch.setattr(model.action, "inverse", lambda g: g)
    with pytest.raises(AssertionError, match="equivariance error"):
        check_quarter_turns(model, random_images(0))


def test_symmetrizers_are_invariant_within_the_bound_on_smooth_images(float64):
    action = rot45()
    for seed in range(3):
        torch.manual_seed(seed)
        x = action.act_in(smooth_images(seed), 0)
        classifier = SmoothClassifier()
        assert equivariance_error(classifier, action, x, invariant=True) > 5 * INVARIANT_BOUND
        for model in (Equitune(classifier, action),
                      LambdaEquitune(classifier, action, LambdaNet(C * SMOOTH**2, hidden=8,
                                                                   dropout=0.0),
                                     lambda_input="input")):
            assert equivariance_error(model.eval(), action, x, invariant=True) < INVARIANT_BOUND


class SmoothClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, 3, 3, padding=1)
        self.fc = nn.Linear(3 * SMOOTH**2, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class SmoothDense(nn.Module):
    """Smooth images to smooth images that vanish where the input does (no bias: the disc's
    edge stays smooth), far from equivariant: a smooth field scaled by an orientation-dependent
    summary of the input."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(C, 3, 1, bias=False)
        centred = torch.arange(SMOOTH) - (SMOOTH - 1) / 2
        y, x = centred[:, None].expand(SMOOTH, SMOOTH), centred[None, :].expand(SMOOTH, SMOOTH)
        envelope = torch.exp(-(x**2 + y**2) / (2 * (SMOOTH / 5) ** 2))
        self.register_buffer("field", torch.stack([y, x, y + x]) / SMOOTH * envelope * 4)
        self.register_buffer("weight", (x + 0.5 * y) / SMOOTH * envelope)

    def forward(self, x):
        summary = (x * self.weight).sum(dim=(1, 2, 3)) / 10
        return torch.tanh(self.mix(x)) + self.field * summary[:, None, None, None]


class InverseMistake(Equitune):
    """Maps each view back by ``g`` instead of ``g⁻¹``."""

    def align(self, y):
        g = self.action.stacked_elements(y.shape[0] // self.action.order, y.device)
        return self.action.rep_out.apply(y, g).view(self.action.order, -1, *y.shape[1:])


def test_dense_equitune_within_the_bound_and_the_inverse_mistake_beyond_it(float64):
    action = rot45(output="image")
    for seed in range(3):
        torch.manual_seed(seed)
        x, dense = action.act_in(smooth_images(seed), 0), SmoothDense()
        assert equivariance_error(dense, action, x) > 5 * DENSE_BOUND
        assert equivariance_error(Equitune(dense, action), action, x) < DENSE_BOUND
        wrong = InverseMistake(dense, action)
        assert equivariance_error(wrong, action, x) > MUTATION_FLOOR
        assert equivariance_error(wrong, action, x, QUARTER_TURNS) > MUTATION_FLOOR


# --- the steerable canonicalizer -----------------------------------------------------------------

def score_error(canonicalizer, action, x, elements):
    """``max |h(g·x)[k] − h(x)[k·g]|`` over ``elements``."""
    with torch.no_grad():
        s = canonicalizer(x)
        return max((canonicalizer(action.act_in(x, g))
                    - s[[action.compose(k, g) for k in action.elements]]).abs().max().item()
                   for g in elements)


@pytest.mark.parametrize("group", ["rot45", "rot90", "rot180"])
def test_steerable_scores_are_exactly_equivariant_under_quarter_turns(float64, group):
    pytest.importorskip("e2cnn")
    action = image_group(group)
    canonicalizer = SteerableCanonicalizer(action, C, width=4, kernel_size=3, seed=0).double()
    x = random_images(4)
    quarter = exact_elements(action) or tuple(action.elements)
    scale = canonicalizer(x).abs().max().item()
    assert score_error(canonicalizer, action, x, quarter) < 1e-12 * max(scale, 1.0)
    canonicalizer.columns = torch.arange(action.order)          # mutation: k for k⁻¹
    if action.order > 2:
        assert score_error(canonicalizer, action, x, quarter) > 1e-6


def test_steerable_scores_on_odd_elements_are_close_on_smooth_images(float64):
    """Under the 45° turns the scores move to the right elements up to interpolation: at most
    half as far off as when read in the mirrored order (measured: at most 0.28 of it)."""
    pytest.importorskip("e2cnn")
    action = rot45()
    mirrored = rotations(8, name="mirrored")
    mirrored.compose = lambda g, h: (g - h) % 8                    # h(g·x)[k] vs h(x)[k·g⁻¹]
    for seed in range(3):
        canonicalizer = SteerableCanonicalizer(action, C, width=8, kernel_size=5, seed=seed)
        x = smooth_images(seed)
        right = score_error(canonicalizer, action, x, (1, 3, 5, 7))
        assert right < 0.5 * score_error(canonicalizer, mirrored, x, (1, 3, 5, 7))


def test_steerable_networks_do_not_share_their_basis():
    """e2cnn caches one sampled basis for all layers of a kind; ours each own theirs, so a
    float64 copy and a float32 one coexist."""
    pytest.importorskip("e2cnn")
    action = rot45()
    wide = SteerableCanonicalizer(action, C, width=2, kernel_size=3, seed=1).double()
    narrow = SteerableCanonicalizer(action, C, width=2, kernel_size=3, seed=1)
    assert narrow(random_images(5)).dtype == torch.float32
    assert wide(random_images(5, dtype=torch.float64)).dtype == torch.float64
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    SteerableCanonicalizer(action, C, seed=3)
    assert torch.equal(before, torch.rand(1))                  # seeded: the stream untouched
    assert not any(k.endswith(("filter", "expanded_bias")) for k in narrow.state_dict())
    with pytest.raises(ValueError, match="rotation groups"):
        SteerableCanonicalizer(d4(), C)
