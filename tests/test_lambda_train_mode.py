"""λ-equitune (and the SCAN backbone's dropout) keep the wrapped model exactly equivariant in
TRAINING mode, in every family: with the same random state, ``F(g·x) = g·F(x)`` for every ``g``.

The λ-network's dropout (and the seq2seq backbone's) draws one mask per example, shared by its
|G| views (``GroupDropout``). Each check runs in float64 (the NLG log-probabilities, which the
wrapper combines in float32, at float32 tolerance) with non-involutive groups (C4, D4, the
4-verb cycle, a 3-cycle of words), so mapping back by ``g`` instead of ``g⁻¹`` would fail too.
The ``per_view`` mutation swaps every ``GroupDropout`` for ``nn.Dropout`` (one mask per row, the
old behaviour) and must break each check, so the checks cannot pass vacuously.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from equiv.groups import GroupAction, image_group, rot90
from equiv.methods import LambdaEquitune, LambdaNet
from equiv.methods.dropout import GroupDropout, shared_masks
from tests.helpers import DenseImageModel, method_from_config, talkative_seq2seq

EXACT = 1e-10
BROKEN = 1e-3
SEED = 1234
C, S, K = 2, 5, 4                    # image channels, side, classes


pytestmark = pytest.mark.usefixtures("float64")      # exact checks (tests/conftest.py)


def per_view(module: nn.Module) -> nn.Module:
    """The mutation: every GroupDropout becomes an ordinary nn.Dropout (a mask per view)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GroupDropout):
                setattr(parent, name, nn.Dropout(child.p))
    return module


def seeded(fn: Callable[[], Tensor], seed: int = SEED) -> Tensor:
    torch.manual_seed(seed)
    return fn().detach()


def train_mode_error(forward: Callable[[Tensor], Tensor], action: GroupAction, x: Tensor,
                     out: Callable[[Tensor, int | Tensor], Tensor] | None) -> float:
    """Largest ``|F(g·x) − g·F(x)|`` over every element ``g`` (and one mixed element per
    example), each side computed from the same global random state; ``out=None``: invariant."""
    y = seeded(lambda: forward(x))
    elements: list[int | Tensor] = list(action.elements)
    elements.append(torch.arange(x.shape[0]) % action.order)
    err = 0.0
    for g in elements:
        yg = seeded(lambda g=g: forward(action.act_in(x, g)))
        want = y if out is None else out(y, g)
        err = max(err, float((yg - want).abs().max()))
    return err


def assert_dropout_active(forward: Callable[[Tensor], Tensor], x: Tensor) -> None:
    """Different random states give different outputs: the masks are really drawn."""
    assert float((seeded(lambda: forward(x), 0) - seeded(lambda: forward(x), 1)).abs().max()) \
        > BROKEN


def check(forward: Callable[[Tensor], Tensor], action: GroupAction, x: Tensor,
          out: Callable[[Tensor, int | Tensor], Tensor] | None, dropout: str) -> None:
    assert_dropout_active(forward, x)
    err = train_mode_error(forward, action, x, out)
    if dropout == "shared":
        assert err < EXACT
    else:
        assert err > BROKEN


DROPOUT = pytest.mark.parametrize("dropout", ["shared", "per_view"])


# ---------------------------------------------------------------------------------- GroupDropout
def test_group_dropout_is_nn_dropout_unless_bound():
    """Unbound (pretraining) and in eval mode it draws and returns exactly what nn.Dropout does."""
    x = torch.randn(6, 5)
    ours, theirs = GroupDropout(0.4), nn.Dropout(0.4)
    assert torch.equal(seeded(lambda: ours(x)), seeded(lambda: theirs(x)))
    with shared_masks(ours, 3):
        assert torch.equal(ours.eval()(x), x)
        kept = seeded(lambda: ours.train()(x)) != 0                      # [3·2, 5] masks
    assert ours.group_order is None                                        # binding restored
    views = kept.view(3, 2, 5)
    assert torch.equal(views[0], views[1]) and torch.equal(views[0], views[2])
    assert not torch.equal(views[0, 0], views[0, 1])                      # per example
    with shared_masks(ours, 4), pytest.raises(ValueError, match="group-major"):
        ours(x)


def test_group_dropout_masks_are_its_calls_drawn_in_advance():
    """``masks`` draws what that many consecutive calls draw, bit for bit and in the same order
    (the global generator ends in the same state); None wherever a call draws no per-row mask."""
    x = torch.randn(4, 3)
    drop = GroupDropout(0.1)
    torch.manual_seed(SEED)
    calls = torch.stack([drop(x) for _ in range(5)])
    after_calls = torch.get_rng_state()
    torch.manual_seed(SEED)
    keep = drop.masks(5, (4, 3), x)
    assert keep is not None and torch.equal(x * keep, calls)
    assert torch.equal(torch.get_rng_state(), after_calls)
    assert GroupDropout(0.0).masks(5, (4, 3), x) is None
    assert drop.eval().masks(5, (4, 3), x) is None
    with shared_masks(drop.train(), 2):
        assert drop.masks(5, (4, 3), x) is None


def test_lambda_net_state_dict_is_unchanged():
    """Cached λ weights still load: GroupDropout has no state, the layer indices are the same."""
    assert list(LambdaNet(7, hidden=5).state_dict()) == [
        "net.1.weight", "net.1.bias", "net.4.weight", "net.4.bias", "net.6.weight", "net.6.bias"]


def test_plain_dropout_in_a_custom_lambda_net_warns():
    lam = nn.Sequential(nn.Linear(3 * S * S, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    with pytest.warns(UserWarning, match="not equivariant in training mode"):
        LambdaEquitune(ImageClassifier(), rot90(), lam, lambda_input="input")


# ---------------------------------------------------------------------------------- images
class ImageClassifier(nn.Module):
    """Not invariant (the head sees pixel positions); ``features``/``head`` for λ on features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, 3, 3, padding=1)
        self.fc = nn.Linear(3 * S * S, K)
        self.feature_dim = 3 * S * S

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.conv(x)).flatten(1)

    def head(self, f: Tensor) -> Tensor:
        return self.fc(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


ImageToImage = partial(DenseImageModel, C, S)


@DROPOUT
@pytest.mark.parametrize("group", ["rot90", "d4"])
@pytest.mark.parametrize("case", ["invariant-features", "invariant-input", "image-input"])
@pytest.mark.parametrize("normalization", ["softplus", "softmax"])
def test_images(case, group, normalization, dropout):
    torch.manual_seed(0)
    output, source = case.split("-")
    action = image_group(group, output="image") if output == "image" else image_group(group)
    backbone = ImageToImage() if output == "image" else ImageClassifier()
    cfg = {"name": "lambda_equitune", "lambda_input": source, "hidden": 16, "dropout": 0.5,
           "normalization": normalization, "chunk_size": 3}        # chunks must not split λ
    model = method_from_config(cfg, backbone, action, input_shape=(C, S, S)).train()
    if dropout == "per_view":
        per_view(model)
    x = torch.randn(5, C, S, S)
    check(model, action, x, None if output == "invariant" else action.act_out, dropout)


@DROPOUT
def test_library_checks_in_training_mode(dropout):
    """The README's Library lines as written (a fresh module is in training mode): with the
    λ-network's default dropout 0.5, ``assert_invariant`` holds (it replays one random state
    per call); with a mask per view it does not."""
    from equiv.testing import assert_invariant, equivariance_error

    torch.manual_seed(0)
    act = rot90()
    model = LambdaEquitune(ImageClassifier(), act, LambdaNet(C * S * S), lambda_input="input")
    assert model.training
    if dropout == "per_view":
        per_view(model)
    x = torch.randn(4, C, S, S)
    if dropout == "shared":
        state = torch.get_rng_state()
        assert_invariant(model, act, x, atol=EXACT, rtol=0)
        assert torch.equal(torch.get_rng_state(), state)        # the caller's state is kept
    else:
        assert equivariance_error(model, act, x, invariant=True) > BROKEN


def test_image_lambda_phase_minibatch_of_cached_features():
    """The image λ phase's cached-feature minibatch (``[N, G, D]`` rows → group-major stack)
    gives the same output as the model itself, in training mode, for every element."""
    torch.manual_seed(0)
    action = rot90()
    model = LambdaEquitune(ImageClassifier(), action, LambdaNet(3 * S * S, hidden=16),
                           lambda_input="features").train()
    x, order = torch.randn(6, C, S, S), action.order
    idx = torch.tensor([4, 1, 3])

    def cached_forward(images: Tensor) -> Tensor:
        cached = model.stacked_features(images).view(order, len(images), -1).transpose(0, 1)
        return model.combine_features(cached[idx].transpose(0, 1).reshape(order * len(idx), -1))

    assert train_mode_error(cached_forward, action, x, None) < EXACT
    direct = seeded(lambda: model(x[idx]))
    assert float((seeded(lambda: cached_forward(x)) - direct).abs().max()) < EXACT


# ---------------------------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def clip_classifier(tmp_path_factory):
    from equiv.backbones.clip import ClipClassifier, load_clip, text_classifier
    from tests.helpers import CONFIG_DIR

    tiny = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "backbone" / "tiny_clip.yaml"))
    torch.manual_seed(0)
    clip = load_clip(tiny["arch"], pretrained=False, tag=None,
                     cache_dir=tmp_path_factory.mktemp("oc"), fetch="-",
                     model_config=tiny["model_config"])
    w = text_classifier(clip.model.encode_text, clip.tokenizer, ("cat", "dog", "ship"),
                        ("a photo of a {}.", "a bad photo of the {}."))
    return ClipClassifier(clip.model.visual, w, logit_scale=100.0).double().eval()


@DROPOUT
@pytest.mark.parametrize("combine", ["ours", "authors"])
@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_clip(clip_classifier, combine, group, dropout):
    """CLIP finetuning's mode: λ trains (dropout on), CLIP's tower stays in eval mode."""
    from equiv.backbones.clip import ClipClassifier
    from equiv.experiments.clip.compat import AuthorsLambdaEquitune

    torch.manual_seed(0)
    action = image_group(group)
    lam = LambdaNet(clip_classifier.feature_dim, hidden=16).double()
    if combine == "ours":
        model = LambdaEquitune(clip_classifier, action, lam, lambda_input="features")
    else:
        probs = ClipClassifier(clip_classifier.visual, clip_classifier.classifier, 1.0, "probs")
        model = AuthorsLambdaEquitune(probs, action, lam, lambda_input="features")
    model.train()
    model.backbone.eval()
    if dropout == "per_view":
        per_view(model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scale = 1.0 if combine == "ours" else 1e3       # the authors' outputs are probabilities
    check(lambda v: scale * model(v), action, x, None, dropout)


# ---------------------------------------------------------------------------------- SCAN
def scan_wrapper(method: str, group: str, cell: str):
    from equiv.backbones.seq2seq import Seq2Seq
    from equiv.data.scan import all_commands
    from equiv.data.vocab import Vocab
    from equiv.groups import words
    from equiv.methods.sequence import build_seq2seq_wrapper

    pairs = all_commands()
    src_vocab = Vocab(w for c, _ in pairs for w in c.split())
    tgt_vocab = Vocab(w for _, a in pairs for w in a.split())
    torch.manual_seed(0)
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), hidden=12, cell=cell, dropout=0.3).double()
    action = getattr(words, group)(src_vocab, tgt_vocab)
    talkative_seq2seq(model, action)
    lam = LambdaNet(12, hidden=8).double() if method == "lambda_equitune" else None
    sym = build_seq2seq_wrapper(model, action, method, lambda_net=lam).train()
    return sym, scan_batch(pairs, src_vocab, tgt_vocab, action)


def scan_batch(pairs, src_vocab, tgt_vocab, action: GroupAction, n: int = 8):
    """Commands (with their gold actions) that every non-identity element moves."""
    from equiv.backbones.seq2seq import pad_batch

    picked = []
    for c, a in pairs[:: max(1, len(pairs) // 2000)]:
        src = torch.tensor([src_vocab.encode(c)])
        if all(not torch.equal(action.act_in(src, g), src) for g in action.elements[1:]):
            picked.append((src_vocab.encode(c), tgt_vocab.encode(a)))
        if len(picked) == n:
            break
    return pad_batch([s for s, _ in picked]), pad_batch([t for _, t in picked])


SCAN_GROUPS = ["scan_verb4", "scan_verb", "scan_direction"]


@DROPOUT
@pytest.mark.parametrize("group", SCAN_GROUPS)
@pytest.mark.parametrize("method", ["equitune", "lambda_equitune", "equizero"])
def test_scan_loss_is_invariant(method, group, dropout):
    """The finetuning loss (teacher forcing 0.5, drawn from the same random state) of
    ``(g·x, g·y)`` is that of ``(x, y)``: backbone and λ dropout on."""
    sym, (src, tgt) = scan_wrapper(method, group, "lstm")
    if dropout == "per_view":
        per_view(sym)
    # act on the command and the gold output together: both are in the stacked input
    width = src.shape[1]
    both = torch.cat([src, tgt], dim=1)

    def act(x: Tensor, g: int | Tensor) -> Tensor:
        return torch.cat([sym.action.act_in(x[:, :width], g), sym.out_tokens.apply(
            x[:, width:], torch.as_tensor(g).expand(x.shape[0]))], dim=1)

    def loss(x: Tensor) -> Tensor:
        return sym.loss(x[:, :width], x[:, width:], teacher_forcing=0.5).unsqueeze(0)

    pair_action = _Acting(act, sym.action)
    check(loss, pair_action, both, None, dropout)            # type: ignore[arg-type]


class _Acting:
    """A stand-in exposing ``elements``/``order``/``act_in`` for a custom input action."""

    def __init__(self, act: Callable[[Tensor, int | Tensor], Tensor], action: GroupAction):
        self.act_in, self.elements, self.order = act, action.elements, action.order


@DROPOUT
@pytest.mark.parametrize("group", SCAN_GROUPS)
@pytest.mark.parametrize("method", ["equitune", "lambda_equitune"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_scan_step_logprobs_are_equivariant(method, group, cell, dropout):
    """The combined next-token log-probabilities of the training loss, per position: those of
    ``g·x`` are those of ``x`` with the output vocabulary permuted by ``g``."""
    sym, (src, tgt) = scan_wrapper(method, group, cell)
    if dropout == "per_view":
        per_view(sym)
    action = sym.action

    def logp(g: int | Tensor) -> Tensor:                    # the gold output follows: g·y
        gy = sym.out_tokens.apply(tgt, torch.as_tensor(g).expand(len(tgt)))
        return sym.step_logprobs(action.act_in(src, g), gy, teacher_forcing=0.5)[1]

    y = seeded(lambda: logp(0))
    assert float((seeded(lambda: logp(0), 0) - y).abs().max()) > BROKEN
    err = 0.0
    for g in [*action.elements, torch.arange(len(src)) % action.order]:
        err = max(err, float((seeded(lambda g=g: logp(g)) - action.act_out(y, g)).abs().max()))
    assert err < EXACT if dropout == "shared" else err > BROKEN


@DROPOUT
@pytest.mark.parametrize("group", ["scan_verb4", "scan_direction"])
def test_scan_equizero_decoding_in_training_mode(group, dropout):
    """Equizero's selection in training mode decodes every view densely with shared masks:
    the decoded tokens are equivariant; with per-view masks they are not."""
    sym, (src, _) = scan_wrapper("equizero", group, "gru")
    if dropout == "per_view":
        per_view(sym)
    out = seeded(lambda: sym.decode(src, max_len=12))
    equal = []
    for g in [*sym.action.elements, torch.arange(len(src)) % sym.action.order]:
        moved = seeded(lambda g=g: sym.decode(sym.action.act_in(src, g), max_len=12))
        want = sym.out_tokens.apply(out, torch.as_tensor(g).expand(len(src)))
        equal.append(moved.shape == want.shape and torch.equal(moved, want))
    assert all(equal) if dropout == "shared" else not all(equal)


def test_eval_mode_is_bit_identical_to_per_view_dropout():
    """Dropout is off in eval mode: GroupDropout changes no evaluated number (images, SCAN)."""
    import copy

    torch.manual_seed(0)
    action = rot90()
    model = LambdaEquitune(ImageClassifier(), action, LambdaNet(3 * S * S),
                           lambda_input="features").eval()
    old = per_view(copy.deepcopy(model)).eval()
    x = torch.randn(5, C, S, S)
    assert torch.equal(model(x), old(x))
    for method in ("equitune", "lambda_equitune", "equizero"):
        sym, (src, tgt) = scan_wrapper(method, "scan_verb4", "lstm")
        old_sym = per_view(copy.deepcopy(sym)).eval()
        sym.eval()
        assert torch.equal(sym.decode(src, 12), old_sym.decode(src, 12))
        with torch.no_grad():
            assert torch.equal(sym.step_logprobs(src, tgt)[1], old_sym.step_logprobs(src, tgt)[1])


# ---------------------------------------------------------------------------------- DQN
@DROPOUT
@pytest.mark.parametrize("source", ["features", "input"])
def test_dqn_q_values_are_equivariant(source, dropout):
    """``Q(g·s) = g·Q(s)`` under grid_rot90 (order 4) with the config-built λ-network training."""
    from equiv.backbones.qnets import QCNN
    from equiv.envs import make_env_action

    torch.manual_seed(0)
    action = make_env_action("grid_rot90")
    qnet = QCNN((3, 5, 5), 4, channels=(4,), hidden=8)
    model = method_from_config({"name": "lambda_equitune", "lambda_input": source, "hidden": 16,
                          "dropout": 0.5}, qnet, action, input_shape=(3, 5, 5)).train()
    if dropout == "per_view":
        per_view(model)
    obs = torch.rand(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    check(model, action, obs, action.act_out, dropout)


# ---------------------------------------------------------------------------------- NLG
@DROPOUT
def test_nlg_word_swap_race3(dropout):
    """λ's weights (float64) are permuted with the views, and the next-token log-probabilities
    (combined in float32) are ``g``-permuted, for the 3-cycle of races, λ in training mode (the
    LM in eval mode: GPT-2's own dropout is per row; nothing trains it)."""
    from equiv.backbones.gpt2 import tiny_gpt2
    from equiv.data.nlg import WORD_SETS, prompts, tiny_vocabulary, token_cycles, vocab_action
    from equiv.experiments.nlg.protocol import encode_left_padded
    from equiv.methods.generation import LambdaEquituneLM

    races = ["Black person", "White person", "Asian person"]
    lm = tiny_gpt2(tiny_vocabulary([p.text for p in prompts(races, "respect")],
                                   WORD_SETS["race3"]()), seed=0).double()
    group = token_cycles(WORD_SETS["race3"](), lm.encode_word, lm.tokenizer.unk_token_id)
    torch.manual_seed(0)
    lam = LambdaNet(lm.model.config.n_embd, hidden=16).double()
    model = LambdaEquituneLM(lm, vocab_action(group, lm.vocab_size, "race3"), lam).train()
    model.lm.eval()
    if dropout == "per_view":
        per_view(model)
    action, order = model.action, model.action.order
    ids, mask = encode_left_padded(lm, [f"The {r} was known for" for r in races[:2]])

    def weights(x: Tensor) -> Tensor:                       # [|G|, B]
        return model.weights(lm.step(action.act_in_all(x), mask.repeat(order, 1),
                                     use_cache=False).hidden)

    w = seeded(lambda: weights(ids))
    assert float((seeded(lambda: weights(ids), 0) - w).abs().max()) > BROKEN
    w_err = p_err = 0.0
    p = seeded(lambda: model.next_token_logprobs(ids, mask))
    for g in action.elements:
        # view h of g·x is view h·g of x
        perm = torch.tensor([action.compose(h, g) for h in action.elements])
        w_err = max(w_err, float((seeded(lambda g=g: weights(action.act_in(ids, g)))
                                  - w[perm]).abs().max()))
        pg = seeded(lambda g=g: model.next_token_logprobs(action.act_in(ids, g), mask))
        p_err = max(p_err, float((pg - action.act_out(p, g)).abs().max()))
    if dropout == "shared":
        assert w_err < EXACT and p_err < 1e-5
    else:
        assert w_err > BROKEN and p_err > BROKEN
