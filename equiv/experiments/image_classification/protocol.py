"""Image classification under test-time rotations/mirrors: transfer a pretrained CNN by
symmetrizing.

Protocol (digits, Fashion-MNIST): a small CNN or a ResNet-18-shaped residual CNN is pretrained
on upright training images and cached. CIFAR-10: torchvision's ImageNet ResNet-18 or AlexNet
gets a new 10-class head instead (no upright stage). Every test image is transformed by its own
seeded random element of the task's transformation group; each method is evaluated zero-shot,
then finetuned on randomly transformed training images with the test accuracy logged along the
way (every module in eval mode when evaluating). λ-equitune can first train its λ-network alone
on cached frozen features (the paper's "prefinetuning"), then the backbone (λ frozen or not).
Canonicalization first learns its prior on upright training images (the zero-shot column),
then its canonicalizer phase (backbone frozen), then finetunes with the prior term kept.

``task.paper_code_compat`` (CIFAR-10) switches to the authors' CNN code: their per-channel head
on a frozen backbone (only the head and λ learn) and softmax-normalised λ. Their evaluation on
the *training* split and their BatchNorm left in training mode are bugs, not options.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from equiv.backbones.torchvision_cnn import TorchvisionCNN
from equiv.checkpoints import fingerprint
from equiv.data.cifar import cifar_root, load_cifar10_split, synthetic_split
from equiv.data.digits import ImageSplit, load_digits_split
from equiv.data.fashion_mnist import load_fashion_mnist_split
from equiv.experiment import Outcome, RunContext, phases_run
from equiv.experiments.canonicalizer_phases import canonicalizer_seed, train_canonicalizer
from equiv.experiments.image_classification.resources import (
    IMAGENET_BACKBONES,
    TORCHVISION_WEIGHTS,
    fetch_command,
    require_weights,
)
from equiv.groups import GroupAction, image_group
from equiv.groups.rotations import exact_elements
from equiv.groups.sampling import transform_elements
from equiv.instantiate import build, build_method
from equiv.methods import Canonicalize, LambdaEquitune, Symmetrizer
from equiv.pretraining import backbone_key, cached_pretrain
from equiv.testing import composition_error, equivariance_error
from equiv.train_state import PROGRESS_FILE, TrainState
from equiv.training import (
    IndexBatches,
    accuracy,
    derived_generator,
    seed_everything,
    train_steps,
    with_own_lr,
)

# Bump when the image pretraining changes what it produces (2: the model is built after seeding
# with task.pretrain.seed). Part of the cache key, so stale image backbones are never reused;
# a family-local version leaves the other families' (long) pretrainings cached.
IMAGE_PRETRAIN_VERSION = 2
# Upright pretraining saves its progress every this many steps (not a config key: the stage's
# config is its cache key, and how often it checkpoints does not change what it produces).
PRETRAIN_CHECKPOINT_EVERY = 200

DATASETS: dict[str, Callable[[DictConfig], ImageSplit]] = {
    "digits": lambda cfg: load_digits_split(cfg.task.data.test_fraction, cfg.task.data.split_seed),
    "fashion_mnist": lambda cfg: load_fashion_mnist_split(
        cfg.task.data.get("root"), cfg.cache_dir, cfg.task.data.get("train_size"),
        cfg.task.data.get("test_size"), cfg.task.data.split_seed),
    "cifar10": lambda cfg: load_cifar10_split(
        cifar_root(cfg.cache_dir, cfg.task.data.get("root")), cfg.task.data.get("train_size"),
        cfg.task.data.get("test_size"), cfg.task.data.split_seed, fetch_command(cfg)),
    "synthetic": lambda cfg: synthetic_split(**_to_plain(cfg.task.data.synthetic)),
}

# The authors' CNN code (OFFICIAL_CODE.md §2): head on a frozen backbone, softmax over λ.
AUTHORS = {"head": "authors", "train_backbone": False, "lambda_normalization": "softmax"}

def _to_plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _data_key(data: DictConfig) -> dict[str, Any]:
    """The data options that change the pretraining: not where the files are, nor the test set."""
    return {k: v for k, v in _to_plain(data).items() if k not in ("root", "test_size")}


def build_backbone(cfg: DictConfig, split: ImageSplit) -> nn.Module:
    """The backbone ``cfg.backbone`` names, for the data's channels and classes (and image
    size, for a backbone that takes it)."""
    return build(cfg.backbone, "backbone", in_channels=split.image_shape[0],
                 num_classes=split.num_classes, optional={"image_size": split.image_shape[1]})


def effective_settings(cfg: DictConfig) -> dict[str, Any]:
    """The switches in force; ``task.paper_code_compat`` sets all of them to the authors'."""
    task = cfg.task
    settings = {"head": task.get("head", "replace"),
                "train_backbone": bool(task.get("train_backbone", True)),
                "lambda_normalization": cfg.method.get("normalization")}
    if task.get("paper_code_compat"):
        settings.update(AUTHORS)
    return settings


def imagenet_backbone(cfg: DictConfig, split: ImageSplit, settings: dict[str, Any],
                      ctx: RunContext) -> tuple[TorchvisionCNN, dict[str, Any] | None]:
    """torchvision CNN with ImageNet weights from ``cache_dir`` (or, explicitly, random) and a
    new head initialised from the run seed."""
    b = cfg.backbone
    checkpoint = require_weights(b.arch, ctx.cache_dir, fetch_command(cfg)) if b.pretrained \
        else None
    seed_everything(ctx.seed)
    model = build(b, "backbone", num_classes=split.num_classes, head=settings["head"],
                  weights_file=checkpoint, fetch=fetch_command(cfg))
    info = None if checkpoint is None else {
        "weights": TORCHVISION_WEIGHTS[b.arch].name, "checkpoint": str(checkpoint)}
    return model, info


def head_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The backbone's classification head: what learns when the rest is frozen."""
    return list(backbone.classifier.parameters())


def make_optimizer(ft: DictConfig) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    """Adam (the suite's small tasks) or SGD with momentum (the paper's CNN finetuning)."""
    if ft.get("optimizer", "adam") == "sgd":
        return lambda params: torch.optim.SGD(params, lr=ft.lr, momentum=ft.get("momentum", 0.0),
                                              weight_decay=ft.weight_decay)
    return lambda params: torch.optim.Adam(params, lr=ft.lr, weight_decay=ft.weight_decay)


def pretrain_upright(model: nn.Module, split: ImageSplit, p: DictConfig, device: torch.device,
                     folder: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Plain supervised training on upright images: the "pretrained model" of this task.

    The caller seeds with ``p.seed`` before building ``model``, so the initial weights, like the
    data order, depend only on the pretraining config. With a ``folder`` (the stage's cache
    folder), progress is saved every ``PRETRAIN_CHECKPOINT_EVERY`` steps and an interrupted
    pretraining resumes exactly; ``force`` starts over instead.
    """
    gen = seed_everything(p.seed)
    model.to(device).train()
    steps = p.epochs * max(1, len(split.x_train) // p.batch_size)
    batches = IndexBatches(len(split.x_train), p.batch_size, gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    state = TrainState({"model": model, "optimizer": optimizer, "generator": gen,
                        "batches": batches})
    path = None if folder is None else folder / PROGRESS_FILE
    config = "" if folder is None else folder.name          # the stage's kind and config hash
    if path is not None:
        state.resume(path, config, force)

    def loss_at(_: int) -> Tensor:
        idx = next(batches)
        return F.cross_entropy(model(split.x_train[idx].to(device)), split.y_train[idx].to(device))

    def on_step(step: int) -> None:
        if path is not None and step % PRETRAIN_CHECKPOINT_EVERY == 0 and step < steps:
            state.step = step
            state.save(path, config)

    train_steps(model.parameters(), loss_at, steps, p.lr, p.weight_decay, desc="pretrain",
                on_step=on_step, optimizer=optimizer, start=state.step)
    model.eval()
    if path is not None:
        path.unlink(missing_ok=True)
    return {"steps": steps,
            "train_accuracy": accuracy(model, split.x_train, split.y_train, 512, device)}


def upright_selection_rate(model: Symmetrizer, x: Tensor, g: Tensor, transform: GroupAction,
                           device: torch.device) -> float | None:
    """How often λ's largest weight, or equizero's choice, is the view that undoes the test
    transform (only meaningful when the model's group is the transformation group)."""
    if not model.action.acts_like(transform):
        return None
    with torch.no_grad():
        if isinstance(model, LambdaEquitune):
            chosen = model.lambda_weights(x.to(device)).argmax(dim=1).cpu()
        elif hasattr(model, "select"):
            chosen = model.select(x.to(device))[0].cpu()
        else:
            return None
    return (chosen == transform.inverse(g)).float().mean().item()


def lambda_weight_summary(model: Symmetrizer, x: Tensor, g: Tensor, transform: GroupAction,
                          batch_size: int, device: torch.device,
                          bins: int = 10) -> dict[str, Any] | None:
    """λ's normalised weights on the test images, indexed relative to the upright view.

    Image ``b`` was transformed by ``g[b]``, so λ's view ``i`` (``i·g[b]·x``) is the upright
    image transformed by ``r = i·g[b]``: ``relative_mean[r]`` is the mean weight on that view
    (``r = 0``: the view that undoes the test transform), and ``upright_histogram`` counts the
    images by the weight on their upright view in ``bins`` equal bins of [0, 1]. None unless
    ``model`` is λ-equitune over the transformation group itself.
    """
    if not isinstance(model, LambdaEquitune) or not model.action.acts_like(transform):
        return None
    order = transform.order
    relative = torch.tensor([[transform.compose(i, h) for i in range(order)]
                             for h in range(order)])             # [g_test, i] -> r
    model.eval()
    with torch.no_grad():
        w = torch.cat([model.lambda_weights(part.to(device)).cpu().double()
                       for part in x.split(batch_size)])          # [N, |G|], views i
    rel = torch.zeros_like(w).scatter_(1, relative[g], w)         # [N, |G|], views r
    counts = torch.histc(rel[:, 0], bins=bins, min=0.0, max=1.0)
    return {"images": len(x), "relative_mean": rel.mean(dim=0).tolist(),
            "upright_histogram": {"edges": torch.linspace(0, 1, bins + 1).tolist(),
                                  "counts": [int(c) for c in counts.tolist()]}}


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    task, mcfg = cfg.task, cfg.method
    out = Outcome()
    split = DATASETS[task.dataset](cfg)
    device = ctx.device
    settings = effective_settings(cfg)
    new_head = cfg.backbone.name in IMAGENET_BACKBONES

    if new_head:
        backbone, out.extra["pretrain"] = imagenet_backbone(cfg, split, settings, ctx)
    elif cfg.backbone.pretrained:
        seed_everything(task.pretrain.seed)        # initial weights depend on the pretrain seed
        backbone = build_backbone(cfg, split)
        key = {"dataset": task.dataset, "data": _data_key(task.data),
               "backbone": backbone_key(_to_plain(cfg.backbone)),
               "pretrain": _to_plain(task.pretrain), "image_code": IMAGE_PRETRAIN_VERSION}
        meta, path = cached_pretrain(
            ctx.cache_dir, f"{task.dataset}-{cfg.backbone.name}", key, backbone,
            lambda m, folder: pretrain_upright(m, split, task.pretrain, device, folder,
                                               force=bool(cfg.force)),
            checkpoint=cfg.backbone.get("checkpoint"))
        out.extra["pretrain"] = {**meta, "checkpoint": str(path)}
    else:
        seed_everything(ctx.seed)
        backbone = build_backbone(cfg, split)      # explicit random initialisation
        out.extra["pretrain"] = None
    backbone.to(device).eval()

    ev = task.eval
    # A new head knows nothing yet: the backbone's upright accuracy only means something for
    # the suite's own pretrained backbones.
    out.metrics["upright_accuracy"] = None if new_head else accuracy(
        backbone, split.x_test, split.y_test, ev.batch_size, device)

    seed_everything(ctx.seed)
    action = build(cfg.group, "group")
    transform = image_group(task.transform)
    compat = {"normalization": settings["lambda_normalization"]} if "normalization" in mcfg else {}
    model = build_method(mcfg, backbone, action, optional={
        "input_shape": split.image_shape, "in_channels": split.image_shape[0],
        "seed": canonicalizer_seed(ctx.seed)}, **compat).to(device)
    out.extra.update({"settings": settings, "evaluated_split": "test",
                      "test_images": len(split.x_test), "train_images": len(split.x_train),
                      "steps_per_epoch": max(1, len(split.x_train) // task.finetune.batch_size)})
    test = TestSet(cfg, model, action, transform, split, ctx, out)

    m = out.metrics
    if exact_elements(transform) is not None:      # interpolated test rotations (rot45)
        approximate_transform_metrics(m, backbone, transform, split, ev, device)
    if isinstance(model, Canonicalize):
        canonicalizer_prior_phase(model, split, cfg, ctx)
        m["zeroshot_upright_identity"] = test.upright_identity(split.x_test)
    zeroshot = m["zeroshot_accuracy"] = test.accuracy()
    m["zeroshot_invariance_error"] = test.invariance_error()
    test.exact_invariance_error("zeroshot")
    m["zeroshot_upright_selected"] = test.upright_selected()
    step_offset = 0
    if isinstance(model, LambdaEquitune) and mcfg.lambda_phase.steps > 0:
        train_lambda_only(model, split, transform, cfg, ctx)
        step_offset = mcfg.lambda_phase.steps
        m["lambda_phase_accuracy"] = test.accuracy("test_accuracy", step_offset)
        m["lambda_phase_upright_selected"] = test.upright_selected()
    elif isinstance(model, Canonicalize) and mcfg.canonicalizer_phase.steps > 0:
        canonicalizer_task_phase(model, split, transform, cfg, ctx)
        step_offset = mcfg.canonicalizer_phase.steps
        m["canonicalizer_phase_accuracy"] = test.accuracy("test_accuracy", step_offset)
        m["canonicalizer_phase_upright_selected"] = test.upright_selected()
        m["canonicalizer_phase_upright_identity"] = test.upright_identity(split.x_test)
    else:       # nothing changed since the zero-shot evaluation (deterministic): reuse it
        test.record("test_accuracy", 0, zeroshot)

    trained = 0
    if task.finetune.steps > 0:
        trained = finetune(cfg, model, split, transform, settings, ctx, test, step_offset)
        m["finetuned_accuracy"] = out.curves["test_accuracy"][-1]["value"]
        m["finetuned_invariance_error"] = test.invariance_error()
        test.exact_invariance_error("finetuned")
        m["finetuned_upright_selected"] = test.upright_selected()
        if isinstance(model, Canonicalize):
            m["finetuned_upright_identity"] = test.upright_identity(split.x_test)
    # λ at the end of the run (after finetuning, else after the λ phase), for the λ figure.
    weights = test.lambda_weights()
    if weights is not None:
        out.extra["lambda_weights"] = weights
    out.extra["parameters"] = {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "added": sum(p.numel() for p in model.parameters()) - sum(
            p.numel() for p in model.backbone.parameters()),
        "finetuned": trained,
    }
    out.summary = summary_lines(out, cfg)
    (ctx.run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    return out


class TestSet:
    """The test images, each transformed by its own seeded group element, and what is measured
    on them (every module in eval mode); accuracies can be logged as curve points."""

    def __init__(self, cfg: DictConfig, model: Symmetrizer, action: GroupAction,
                 transform: GroupAction, split: ImageSplit, ctx: RunContext,
                 out: Outcome) -> None:
        ev = cfg.task.eval
        self.model, self.action, self.transform, self.y = model, action, transform, split.y_test
        self.ctx, self.out, self.batch_size = ctx, out, ev.batch_size
        self.g = transform_elements(len(split.x_test), transform.order, ev.transform_mode,
                                    ev.batch_size, derived_generator(ctx.seed, "test_transform"))
        self.x = transform.act_in(split.x_test, self.g)
        self.probe = self.x[: ev.invariance_probe].to(ctx.device)
        self.n_select = ev.get("selection_probe") or len(self.x)

    def record(self, curve: str, step: int, acc: float) -> float:
        self.out.add_point(curve, step, acc)
        self.ctx.logger.log_metrics({curve: acc}, step=step)
        return acc

    def accuracy(self, curve: str | None = None, step: int = 0) -> float:
        self.model.eval()
        acc = accuracy(self.model, self.x, self.y, self.batch_size, self.ctx.device)
        return acc if curve is None else self.record(curve, step, acc)

    def invariance_error(self, elements: tuple[int, ...] | None = None) -> float:
        self.model.eval()
        return equivariance_error(self.model, self.action, self.probe, elements,
                                  invariant=self.action.invariant_output)

    def exact_invariance_error(self, stage: str) -> None:
        """For a group that is only approximately one (rot45), also the error over the elements
        it acts exactly by (the quarter turns): rounding only, where the error over all of them
        includes the interpolation's."""
        exact = exact_elements(self.action)
        if exact is not None:
            self.out.metrics[f"{stage}_invariance_error_exact"] = self.invariance_error(exact)

    def upright_selected(self) -> float | None:
        n = self.n_select
        return upright_selection_rate(self.model, self.x[:n], self.g[:n], self.transform,
                                      self.ctx.device)

    def upright_identity(self, upright: Tensor) -> float | None:
        """Share of upright images (not transformed) the canonicalizer leaves as they are."""
        if not isinstance(self.model, Canonicalize):
            return None
        self.model.eval()
        n = self.n_select
        return self.model.identity_share(upright[:n].to(self.ctx.device))

    def lambda_weights(self) -> dict[str, Any] | None:
        n = self.n_select
        return lambda_weight_summary(self.model, self.x[:n], self.g[:n], self.transform,
                                     self.batch_size, self.ctx.device)


def finetune(cfg: DictConfig, model: Symmetrizer, split: ImageSplit, transform: GroupAction,
             settings: dict[str, Any], ctx: RunContext, test: TestSet, step_offset: int) -> int:
    """Train on randomly transformed training images, the test accuracy logged every
    ``eval_every`` steps (curve steps after the λ phase's); resumable from ``progress.pt`` in
    the run directory. Returns the number of parameters trained."""
    ft, out, device = cfg.task.finetune, test.out, ctx.device
    train_backbone = settings["train_backbone"]
    params = list(model.backbone.parameters()) if train_backbone \
        else head_parameters(model.backbone)
    if isinstance(model, LambdaEquitune) and not cfg.method.freeze_lambda:
        params += list(model.lambda_net.parameters())
    prior_weight, canonicalizer = 0.0, []
    if isinstance(model, Canonicalize):
        prior_weight = model.prior_weight          # the prior stays in the loss (Mondal et al.)
        if not cfg.method.freeze_canonicalizer:
            canonicalizer = list(model.canonicalizer.parameters())
    for p in model.backbone.parameters():
        p.requires_grad_(train_backbone)
    for p in params + canonicalizer:
        p.requires_grad_(True)
    optimizer = make_optimizer(ft)(
        with_own_lr(params, canonicalizer, cfg.method.get("canonicalizer_lr")))
    gen = derived_generator(ctx.seed, "finetune")
    batches = IndexBatches(len(split.x_train), ft.batch_size, gen)
    checkpoint_every = ft.get("checkpoint_every") or ft.eval_every
    state = TrainState({"model": model, "optimizer": optimizer, "generator": gen,
                        "batches": batches}, {"curves": out.curves})
    path, config = ctx.run_dir / PROGRESS_FILE, fingerprint(_to_plain(cfg))
    if state.resume(path, config, force=bool(cfg.force)):
        out.curves = state.progress["curves"]      # the points logged before the checkpoint

    def loss_at(_: int) -> Tensor:
        idx = next(batches)
        g = torch.randint(transform.order, (len(idx),), generator=gen)
        x = transform.act_in(split.x_train[idx], g).to(device)
        model.train()
        if not train_backbone:      # frozen: BatchNorm statistics and dropout stay fixed
            model.backbone.eval()
        loss = F.cross_entropy(model(x), split.y_train[idx].to(device))
        if prior_weight:
            loss = loss + prior_weight * model.prior_loss(split.x_train[idx].to(device))
        return loss

    def on_step(step: int) -> None:
        if step % ft.eval_every == 0 or step == ft.steps:
            test.accuracy("test_accuracy", step_offset + step)
        if step % checkpoint_every == 0 and step < ft.steps:
            state.step = step
            state.save(path, config)

    train_steps(params, loss_at, ft.steps, ft.lr, ft.weight_decay, desc="finetune",
                on_step=on_step, optimizer=optimizer, start=state.step)
    return sum(p.numel() for p in params)


def train_lambda_only(model: LambdaEquitune, split: ImageSplit, transform: GroupAction,
                      cfg: DictConfig, ctx: RunContext) -> None:
    """Phase 1: only the λ-network learns; the frozen backbone never runs twice on a view.

    With ``lambda_input=features`` the features of the |G| views of every training image the
    phase visits are computed once and cached. The model is invariant, so a randomly transformed
    training image has the same view set as the upright one, only permuted: training on the
    cached views is exact.
    """
    lp, device = cfg.method.lambda_phase, ctx.device
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.backbone.eval()
    gen = derived_generator(ctx.seed, "lambda_phase")
    batches = IndexBatches(len(split.x_train), lp.batch_size, gen)
    order = model.action.order

    if model.lambda_input == "features":
        # The phase's batches are drawn first so that features are computed only for the images
        # it visits: all of them on digits, a fifth of Fashion-MNIST's 60,000 by default.
        plan = [next(batches) for _ in range(lp.steps)]
        batches = iter(plan)
        visited = torch.unique(torch.cat(plan))
        row = torch.full((len(split.x_train),), -1, dtype=torch.long)
        row[visited] = torch.arange(len(visited))
        with torch.no_grad():
            cached = torch.cat([
                model.stacked_features(part.to(device)).view(order, len(part), -1).transpose(0, 1)
                for part in split.x_train[visited].split(cfg.task.eval.batch_size)])  # [N, G, D]

        def forward(idx: Tensor) -> Tensor:
            rows = row[idx].to(cached.device)
            feats = cached[rows].transpose(0, 1).reshape(order * len(idx), -1)
            return model.combine_features(feats)
    else:
        def forward(idx: Tensor) -> Tensor:
            g = torch.randint(transform.order, (len(idx),), generator=gen)
            return model(transform.act_in(split.x_train[idx], g).to(device))

    def loss_at(_: int) -> Tensor:
        idx = next(batches)
        model.lambda_net.train()
        return F.cross_entropy(forward(idx), split.y_train[idx].to(device))

    train_steps(model.lambda_net.parameters(), loss_at, lp.steps, lp.lr, desc="lambda phase")


def canonicalizer_prior_phase(model: Canonicalize, split: ImageSplit, cfg: DictConfig,
                              ctx: RunContext) -> None:
    """Phase 0: the canonicalizer learns that upright training images are canonical."""
    ph = cfg.method.prior_phase
    batches = IndexBatches(len(split.x_train), ph.batch_size,
                           derived_generator(ctx.seed, "prior_phase"))
    train_canonicalizer(model, lambda: split.x_train[next(batches)].to(ctx.device),
                        ph.steps, ph.lr, desc="prior phase")


def canonicalizer_task_phase(model: Canonicalize, split: ImageSplit, transform: GroupAction,
                             cfg: DictConfig, ctx: RunContext) -> None:
    """Phase 1: backbone frozen; the canonicalizer learns from the classification loss on
    randomly transformed training images, the prior on the same images upright."""
    ph = cfg.method.canonicalizer_phase
    gen = derived_generator(ctx.seed, "canonicalizer_phase")
    batches = IndexBatches(len(split.x_train), ph.batch_size, gen)
    current: dict[str, Tensor] = {}

    def upright() -> Tensor:
        current["idx"] = idx = next(batches)
        return split.x_train[idx].to(ctx.device)

    def task_loss() -> Tensor:
        idx = current["idx"]
        g = torch.randint(transform.order, (len(idx),), generator=gen)
        x = transform.act_in(split.x_train[idx], g).to(ctx.device)
        return F.cross_entropy(model(x), split.y_train[idx].to(ctx.device))

    train_canonicalizer(model, upright, ph.steps, ph.lr, desc="canonicalizer phase",
                        task_loss=task_loss)


def approximate_transform_metrics(m: dict[str, Any], backbone: nn.Module, transform: GroupAction,
                                  split: ImageSplit, ev: DictConfig,
                                  device: torch.device) -> None:
    """What an interpolated transformation group (rot45) does to the data itself: how far it is
    from a group action on the probe's upright test images (``composition_error``), and the
    pretrained backbone's accuracy on the upright test images masked as every view is (its
    identity element), beside ``upright_accuracy`` on the images as they are."""
    upright = split.x_test[: ev.invariance_probe].to(device)
    m["transform_composition_error"] = composition_error(transform, upright)
    m["upright_masked_accuracy"] = accuracy(backbone, transform.act_in(split.x_test, 0),
                                            split.y_test, ev.batch_size, device)


def summary_lines(out: Outcome, cfg: DictConfig) -> list[tuple[str, str]]:
    m = out.metrics
    lines = [] if m["upright_accuracy"] is None else [
        ("upright test accuracy (pretrained backbone, no transform)", m["upright_accuracy"])]
    zeroshot = "zero-shot" if m["upright_accuracy"] is not None else "zero-shot (new head)"
    lines.append((f"{cfg.task.transform} test accuracy, {zeroshot}", m["zeroshot_accuracy"]))
    lines += [(f"  {label}", m[f"{phase}_accuracy"])
              for label, phase in phases_run(m, cfg.method, "{}_accuracy")]
    if "finetuned_accuracy" in m:
        lines.append((f"  after finetuning ({cfg.task.finetune.steps} steps)",
                      m["finetuned_accuracy"]))
    err = m.get("finetuned_invariance_error", m["zeroshot_invariance_error"])
    lines = [(label, f"{value:.4f}") for label, value in lines]
    lines.append((f"max |F(g·x) − F(x)| over {cfg.group.name} (invariance error)", f"{err:.2e}"))
    exact = m.get("finetuned_invariance_error_exact", m.get("zeroshot_invariance_error_exact"))
    if exact is not None:
        lines.append(("  over its quarter turns only (exact; the rest interpolate)",
                      f"{exact:.2e}"))
    return lines
