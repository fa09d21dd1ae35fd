"""CLIP adapter on a tiny random open_clip model: exact invariance of every method in float64
(canonicalization built from the CLIP task's config, in eval and training mode), g vs g⁻¹ in
view selection, the text-classifier cache, λ's and the canonicalizer phase's caches, missing
weights."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from omegaconf import OmegaConf

from equiv.backbones.clip import (
    ClipClassifier,
    cached_text_classifier,
    load_clip,
    resolve_pretrained,
    text_classifier,
)
from equiv.data.clip_prompts import (
    CIFAR100_CLASSNAMES,
    CIFAR_TEMPLATES,
    imagenet_prompts,
    prompts_for,
    prompts_hash,
)
from equiv.errors import MissingResourceError
from equiv.experiments.clip import resources
from equiv.experiments.clip.canonicalize import FrozenViewOutputs
from equiv.experiments.clip.compat import AuthorsLambdaEquitune
from equiv.experiments.clip.protocol import cache_view_features
from equiv.groups import image_group, rot90
from equiv.instantiate import build_method
from equiv.methods import Equitune, Equizero, LambdaEquitune, LambdaNet
from equiv.testing import assert_invariant, equivariance_error
from tests.helpers import CONFIG_DIR, compose_config

TINY = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "backbone" / "tiny_clip.yaml"))
CLASSES, TEMPLATES = ("cat", "dog", "ship"), ("a photo of a {}.", "a bad photo of the {}.")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    return load_clip(TINY["arch"], pretrained=False, tag=None,
                     cache_dir=tmp_path_factory.mktemp("oc"), fetch="-",
                     model_config=TINY["model_config"])


@pytest.fixture(scope="module")
def classifier64(clip):
    w = text_classifier(clip.model.encode_text, clip.tokenizer, CLASSES, TEMPLATES)
    return ClipClassifier(clip.model.visual, w, logit_scale=100.0).double().eval()


def images(n=3, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def methods(backbone, action):
    lam = LambdaNet(backbone.feature_dim, hidden=8, dropout=0.0).double()
    probs = ClipClassifier(backbone.visual, backbone.classifier, 1.0, "probs")
    return {
        "equitune": Equitune(backbone, action),
        "equizero": Equizero(backbone, action, "neg_max_logit"),
        "lambda_equitune": LambdaEquitune(backbone, action, lam, lambda_input="features"),
        "lambda_authors": AuthorsLambdaEquitune(probs, action, lam, lambda_input="features"),
    }


def test_prompt_lists_are_complete():
    imagenet_classnames, imagenet_templates = imagenet_prompts()       # from open_clip
    assert (len(imagenet_templates), len(imagenet_classnames)) == (80, 1000)
    assert (len(CIFAR_TEMPLATES), len(CIFAR100_CLASSNAMES)) == (18, 100)
    assert len(set(imagenet_classnames)) == 998          # CLIP's list repeats two names
    assert all(t.count("{}") == 1 for t in imagenet_templates)


def test_prompt_hashes_are_the_cache_keys_of_cached_text_classifiers():
    """The text classifiers cached so far are keyed by these hashes: a prompt list that changes
    (e.g. a new open_clip release editing its ImageNet names) must be noticed, not silently
    re-keyed."""
    hashes = {d: prompts_hash(*prompts_for(d)) for d in ("cifar10", "cifar100", "imagenet_v2")}
    assert hashes == {"cifar10": "4dfd73c608d2", "cifar100": "d56f037ab585",
                      "imagenet_v2": "5c6f8e3427a3"}


def test_weight_table_agrees_with_open_clip():
    import open_clip

    for arch, w in resources.OPENAI_WEIGHTS.items():
        cfg = open_clip.get_pretrained_cfg(arch, "openai")
        assert cfg["hf_hub"].rstrip("/") == w.hf_repo and cfg["url"] == w.url
        assert cfg["quick_gelu"] is True          # hence quick_gelu: null -> QuickGELU


@pytest.mark.parametrize("group", ["rot90", "rot180", "hflip", "d4"])
def test_every_method_is_exactly_invariant(classifier64, group):
    action = image_group(group)
    x = images()
    assert equivariance_error(classifier64, action, x, invariant=True) > 1e-4   # CLIP is not
    for model in methods(classifier64, action).values():
        model.eval()
        assert_invariant(model, action, x, atol=1e-10)


@pytest.mark.parametrize("group", ["rot90", "d4"])
def test_view_selection_follows_g_inverse(classifier64, group):
    """The views of t·x are those of x shifted by t: equizero's choice (and λ's weights) for t·x
    must be g*·t⁻¹. Using t instead of t⁻¹ fails for rotations by ±90°."""
    action = image_group(group)
    x = images(4, seed=1)
    zero = methods(classifier64, action)["equizero"]
    lam = methods(classifier64, action)["lambda_equitune"].eval()
    g0 = zero.select(x)[0]
    w0 = lam.lambda_weights(x)
    for t in action.elements:
        tx = action.act_in(x, t)
        expected = torch.tensor([action.compose(g, action.inverse(t)) for g in g0.tolist()])
        assert torch.equal(zero.select(tx)[0], expected)
        perm = [action.compose(g, t) for g in action.elements]       # weight of view g of t·x
        assert torch.allclose(lam.lambda_weights(tx), w0[:, perm], atol=1e-12)
    wrong = torch.tensor([action.compose(g, 1) for g in g0.tolist()])
    assert not torch.equal(zero.select(action.act_in(x, 1))[0], wrong)


def test_text_classifier_is_computed_once_and_cached(clip, tmp_path):
    calls = []

    def encode_text(tokens):
        calls.append(len(tokens))
        return clip.model.encode_text(tokens)

    key = {"arch": "tiny", "tag": "none", "dataset": "toy", "prompts": "abc"}
    compute = lambda: text_classifier(encode_text, clip.tokenizer, CLASSES, TEMPLATES)  # noqa: E731
    w1, cached1, path = cached_text_classifier(tmp_path, key, compute)
    w2, cached2, _ = cached_text_classifier(tmp_path, key, compute)
    assert (cached1, cached2) == (False, True) and path.is_file()
    assert sum(calls) == len(CLASSES) * len(TEMPLATES) and len(calls) == 1   # one batched call
    assert torch.equal(w1, w2) and w1.shape == (TINY["model_config"]["embed_dim"], len(CLASSES))
    assert torch.allclose(w1.norm(dim=0), torch.ones(len(CLASSES)))
    _, cached3, path3 = cached_text_classifier(tmp_path, {**key, "prompts": "xyz"}, compute)
    assert not cached3 and path3 != path and len(calls) == 2


def test_lambda_features_are_computed_once_per_image_and_element(classifier64):
    action = rot90()
    model = methods(classifier64, action)["lambda_equitune"]
    rows = []
    handle = classifier64.visual.register_forward_hook(lambda m, i, o: rows.append(len(i[0])))
    data = [(images(1, seed=i)[0], 0, i) for i in range(5)]
    try:
        feats = cache_view_features(model, data, batch_size=2, num_workers=0,
                                    device=torch.device("cpu"))
    finally:
        handle.remove()
    assert sum(rows) == 5 * action.order and len(rows) == 3       # one call per batch of views
    assert feats.shape == (5, action.order, classifier64.feature_dim)
    x = torch.stack([d[0] for d in data])
    expected = model.stacked_features(x).view(action.order, 5, -1).transpose(0, 1)
    assert torch.allclose(feats, expected, atol=1e-12)


def test_missing_weights_name_the_prefetch_command(tmp_path):
    hint = resources.prefetch_command("clip_rot90", "clip_rn50")
    assert hint == "python scripts/prefetch.py task=clip_rot90 backbone=clip_rn50"
    with pytest.raises(MissingResourceError, match="open_clip weights RN50/openai") as err:
        resolve_pretrained("RN50", "openai", tmp_path, hint)
    assert hint in str(err.value) and "resnet50_clip.openai" in str(err.value)
    with pytest.raises(MissingResourceError, match=r"prefetch\.py task=clip_rot90"):
        load_clip("RN50", pretrained=True, tag="openai", cache_dir=tmp_path, fetch=hint)
    with pytest.raises(MissingResourceError):
        resources.require_weights("ViT-B-16", "openai", tmp_path, hint)


def test_downloaded_weights_are_found_where_open_clip_puts_them(tmp_path):
    snap = (tmp_path / "open_clip" / "models--timm--resnet50_clip.openai" / "snapshots" / "abc")
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"")
    assert resources.find_weights("RN50", tmp_path) == snap / "open_clip_model.safetensors"
    assert resolve_pretrained("RN50", "openai", tmp_path / "open_clip", "-") == (
        snap / "open_clip_model.safetensors")


def canonicalize(backbone, group, gradient="straight_through", task="clip_rot90"):
    """``method=canonicalize`` as the CLIP task's config builds it (its group CNN sees 4×4 block
    means of the image), in float64."""
    pytest.importorskip("equiadapt")
    cfg = compose_config(f"task={task}", "method=canonicalize", f"group={group}",
                         f"method.gradient={gradient}")
    model = build_method(cfg.method, backbone, image_group(group),
                         optional={"in_channels": 3, "seed": 0}).double()
    assert model.canonicalizer.pool == 4
    return model


def invariance_with_grad(model, x):
    """``max_g |F(g·x) − F(x)|`` with gradients enabled, so that training mode runs the
    straight-through or relaxed path."""
    y = model(x).detach()
    return max((model(model.action.act_in(x, g)).detach() - y).abs().max().item()
               for g in model.action.elements)


@pytest.mark.parametrize("mode", ["eval", "straight_through", "relaxed"])
@pytest.mark.parametrize(("group", "task"), [("rot90", "clip_rot90"), ("rot180", "clip_flip"),
                                             ("hflip", "clip_hflip")])
def test_canonicalize_is_exactly_invariant(classifier64, group, task, mode):
    model = canonicalize(classifier64, group, "relaxed" if mode == "relaxed" else
                         "straight_through", task)
    model.train(mode != "eval")
    model.backbone.eval()                       # as the protocol: CLIP's tower stays in eval
    x = images(4, seed=3)
    assert invariance_with_grad(model, x) <= 1e-10
    chosen = model.select(x)[0]
    for g in model.action.elements:             # the canonicalizer's choice moves with g⁻¹
        expected = torch.tensor([model.action.compose(c, model.action.inverse(g))
                                 for c in chosen.tolist()])
        assert torch.equal(model.select(model.action.act_in(x, g))[0], expected)


@pytest.mark.parametrize("group", ["rot90", "rot180"])
def test_canonicalize_inverse_mistake_is_caught_by_quarter_turns(classifier64, group,
                                                                 monkeypatch):
    """Running the view ``g*⁻¹·x`` instead of ``g*·x`` breaks invariance under quarter turns;
    under a half turn (its own inverse) it cannot be seen: the order-2 blind spot."""
    model = canonicalize(classifier64, group).eval()
    x = images(4, seed=4)
    assert invariance_with_grad(model, x) <= 1e-10
    act = model.action
    monkeypatch.setattr(model, "canonical_views", lambda x, sel: act.act_in(
        x.index_select(0, sel.example), act.inverse(sel.element)))
    error = invariance_with_grad(model, x)
    assert error > 1e-3 if group == "rot90" else error <= 1e-10


def test_canonicalizer_scores_are_equivariant_on_224_pixel_images():
    """The downscaling (4×4 block means) commutes with every rotation and mirror of a square
    224-pixel image, so the group CNN's scores stay equivariant: h(g·x)[k] = h(x)[k·g]."""
    pytest.importorskip("equiadapt")
    cfg = compose_config("task=clip_rot90", "method=canonicalize", "group=d4")
    action = image_group("d4")
    canon = build_method(cfg.method, torch.nn.Identity(), action,
                         optional={"in_channels": 3, "seed": 1}).canonicalizer.double()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    scores = canon(x)
    for g in action.elements:
        perm = [action.compose(k, g) for k in action.elements]
        assert torch.allclose(canon(action.act_in(x, g)), scores[perm], atol=1e-10, rtol=0)


@pytest.mark.parametrize("gradient", ["straight_through", "relaxed"])
@pytest.mark.parametrize(("group", "transform"), [("rot90", "rot90"), ("d4", "rot90"),
                                                  ("hflip", "rot180")])
def test_canonicalizer_phase_cache_gives_the_wrappers_output_and_gradient(
        classifier64, group, transform, gradient):
    """The phase's cached backbone outputs give ``model(t·x)`` exactly, value and the
    canonicalizer's gradient, also when a revisited image comes with another transformation
    and its views come from the cache."""
    model = canonicalize(classifier64, group, gradient).train()
    model.backbone.eval()
    tr = image_group(transform)
    x, index = images(4, seed=5), torch.tensor([5, 0, 7, 2])
    cached = FrozenViewOutputs(model, tr, images=8)
    weights = torch.randn(4, len(CLASSES), generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    params = list(model.canonicalizer.parameters())
    for t in (torch.tensor([1, 0, 1, 1]), torch.tensor([0, 1, 1, 0])):
        t = t % tr.order * (tr.order - 1)           # rot90: 0 or 270°; order 2: 0 or 1
        xt = tr.act_in(x, t)
        want, got = model(xt), cached(xt, index, t)
        assert torch.allclose(got, want, atol=1e-10, rtol=0)
        grad_want = torch.autograd.grad((want * weights).sum(), params)
        grad_got = torch.autograd.grad((got * weights).sum(), params)
        for a, b in zip(grad_got, grad_want, strict=True):
            assert torch.allclose(a, b, atol=1e-10, rtol=0)
    views = 4 * model.action.order if gradient == "relaxed" else 4
    assert cached.requested == 2 * views
    if group != "hflip":        # the transformation is in the group: the same views, reused
        assert cached.computed == views
