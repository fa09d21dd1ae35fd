"""CLIP zero-shot classification under test-time rotations/flips, then optional finetuning.

Protocol (paper §4; OFFICIAL_CODE.md §1 for the authors' code): every test image is transformed
by its own seeded random element of the task's group (the authors: one draw per batch). A
zero-shot classifier is built from class names × prompt templates (cached on disk). Each method
is evaluated zero-shot; λ-equitune first trains its λ-network alone on frozen image features
computed once per training image and group element; canonicalization learns its prior on upright
training images before the zero-shot evaluation, then its canonicalizer phase (tower frozen,
``equiv.experiments.clip.canonicalize``); then, if ``task.finetune.steps > 0``, the image tower
(and λ or the canonicalizer unless frozen) is finetuned with SGD on randomly transformed training
images.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from equiv.backbones.clip import ClipClassifier, cached_text_classifier, text_classifier
from equiv.config import phase_steps
from equiv.data.clip_prompts import prompts_hash
from equiv.experiment import Outcome, RunContext, phases_run
from equiv.experiments.canonicalizer_phases import canonicalizer_seed
from equiv.experiments.clip.canonicalize import canonicalizer_phase, prior_phase
from equiv.experiments.clip.compat import AuthorsLambdaEquitune
from equiv.experiments.clip.data import ClipData, Indexed, load_data
from equiv.experiments.clip.resources import open_clip_cache, prefetch_command
from equiv.groups import GroupAction, image_group
from equiv.groups.sampling import transform_elements
from equiv.instantiate import build, build_method
from equiv.methods import Canonicalize, Equizero, LambdaEquitune, Symmetrizer
from equiv.pretraining import config_hash
from equiv.testing import equivariance_error
from equiv.training import (
    IndexBatches,
    check_finite,
    derived_generator,
    progress,
    seed_everything,
    with_own_lr,
)

AUTHORS = {"logit_scale": 1.0, "output": "probs", "transform_mode": "per_batch",
           "lambda_combine": "authors", "freeze_lambda": True, "lambda_select_every": 100}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def effective_settings(cfg: DictConfig) -> dict[str, Any]:
    """The switches in force; ``task.paper_code_compat`` sets all of them to the authors'."""
    task, method = cfg.task, cfg.method
    settings = {"logit_scale": task.head.logit_scale, "output": task.head.output,
                "transform_mode": task.eval.transform_mode,
                "lambda_combine": task.lambda_combine,
                "freeze_lambda": bool(method.get("freeze_lambda", True)),
                "lambda_select_every": OmegaConf.select(method, "lambda_phase.select_every") or 0}
    if task.paper_code_compat:
        settings.update(AUTHORS)
    return settings


def num_workers(task: DictConfig) -> int:
    """DataLoader workers: none for the in-memory synthetic data."""
    return 0 if task.dataset == "synthetic" else int(task.data.num_workers)


def loader(data: Any, batch_size: int, num_workers: int, shuffle: bool = False,
           gen: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      num_workers=num_workers, drop_last=drop_last)


def build_backbone(cfg: DictConfig, ctx: RunContext, data_prompts: tuple[tuple[str, ...],
                   tuple[str, ...]], settings: dict[str, Any], preloaded: Any
                   ) -> tuple[ClipClassifier, dict[str, Any]]:
    """Image tower + cached zero-shot text classifier; the text tower is dropped afterwards."""
    b, task = cfg.backbone, cfg.task
    loaded = preloaded
    classnames, templates = data_prompts
    key = {"arch": b.arch, "tag": b.tag if b.pretrained else f"random-seed{ctx.seed}",
           "dataset": task.dataset, "prompts": prompts_hash(classnames, templates),
           "quick_gelu": b.quick_gelu, "precision": b.precision,
           "model_config": config_hash(_plain(b.model_config) or {})}
    model = loaded.model.to(ctx.device)
    weights, cached, path = cached_text_classifier(
        ctx.cache_dir, key, lambda: text_classifier(model.encode_text, loaded.tokenizer,
                                                    classnames, templates, ctx.device))
    learned = float(model.logit_scale.exp().item())
    scale = learned if settings["logit_scale"] == "clip" else float(settings["logit_scale"])
    dtype = next(model.visual.parameters()).dtype
    backbone = ClipClassifier(model.visual, weights.to(ctx.device, dtype), scale,
                              settings["output"])
    info = {"checkpoint": str(loaded.checkpoint) if loaded.checkpoint else None,
            "learned_logit_scale": learned, "logit_scale": scale,
            "text_classifier": {"path": str(path), "cached": cached, "classes": len(classnames),
                                "templates": len(templates)}}
    return backbone.eval(), info


def build_model(cfg: DictConfig, backbone: ClipClassifier, action: GroupAction,
                settings: dict[str, Any], seed: int) -> Symmetrizer:
    model = build_method(cfg.method, backbone, action,
                         optional={"in_channels": 3, "seed": canonicalizer_seed(seed)})
    if isinstance(model, LambdaEquitune) and settings["lambda_combine"] == "authors":
        model = AuthorsLambdaEquitune(backbone, action, model.lambda_net,
                                      normalization=model.normalization, lambda_input="features",
                                      detach_features=model.detach_features,
                                      chunk_size=model.chunk_size)
    return model


@torch.no_grad()
def evaluate(model: Any, data: Indexed, g: Tensor, transform: GroupAction, batch_size: int,
             num_workers: int, device: torch.device) -> float:
    """Top-1 accuracy with image ``i`` transformed by ``g[i]``."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    correct = 0
    for x, y, idx in progress(loader(data, batch_size, num_workers), desc="eval"):
        x = transform.act_in(x.to(device), g[idx].to(device))
        correct += (model(x).argmax(dim=-1).cpu() == y).sum().item()
    return correct / len(data)


def probe_images(data: Indexed, n: int) -> Tensor:
    """The first ``n`` test images, upright."""
    return torch.stack([data[i][0] for i in range(min(n, len(data)))])


@torch.no_grad()
def upright_selected(model: Symmetrizer, probe: Tensor, g: Tensor, transform: GroupAction,
                     device: torch.device) -> float | None:
    """How often equizero's or the canonicalizer's choice (or λ's largest weight) is ``g⁻¹``:
    the view that undoes the test transform ``g`` (only when the model's group is the
    transformation group)."""
    if not model.action.acts_like(transform) or len(probe) == 0:
        return None
    model.eval()
    if isinstance(model, LambdaEquitune):
        chosen = model.lambda_weights(probe.to(device)).argmax(dim=1).cpu()
    elif isinstance(model, (Equizero, Canonicalize)):
        chosen = model.select(probe.to(device))[0].cpu()
    else:
        return None
    return (chosen == transform.inverse(g[: len(probe)])).float().mean().item()


def cache_view_features(model: LambdaEquitune, data: Any, batch_size: int, num_workers: int,
                        device: torch.device) -> Tensor:
    """``[N, |G|, D]`` frozen features of every image's views: one backbone pass per view, ever."""
    model.backbone.eval()
    order, parts = model.action.order, []
    with torch.no_grad():
        for x, _, _ in progress(loader(data, batch_size, num_workers), desc="λ features"):
            feats = model.stacked_features(x.to(device))
            parts.append(feats.view(order, len(x), -1).transpose(0, 1).cpu())
    return torch.cat(parts)


def train_lambda_phase(model: LambdaEquitune, train: Indexed, cfg: DictConfig, ctx: RunContext,
                       settings: dict[str, Any]) -> dict[str, Any]:
    """Phase 1: the λ-network alone, SGD on cached frozen features (never recomputed).

    The wrapped model is invariant, so a transformed training image's views are the upright
    image's views permuted: training on the cached views of upright images is exact.
    """
    lp, device = cfg.method.lambda_phase, ctx.device
    gen = derived_generator(ctx.seed, "lambda_phase")
    n = len(train)
    pool = torch.randperm(n, generator=gen)[: min(lp.pool, n)].sort().values
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    feats = cache_view_features(model, Subset(train, pool.tolist()), cfg.task.eval.batch_size,
                                num_workers(cfg.task), device)
    labels = train.labels()[pool]
    order = model.action.order

    def forward(idx: Tensor) -> Tensor:
        f = feats[idx].transpose(0, 1).reshape(order * len(idx), -1).to(device)
        return model.combine_features(f)

    select_every = settings["lambda_select_every"]
    held = torch.arange(min(lp.select_images, len(pool)))

    @torch.no_grad()
    def score() -> float:
        model.lambda_net.eval()
        preds = torch.cat([forward(i).argmax(-1).cpu() for i in held.split(256)])
        return (preds == labels[held]).float().mean().item()

    best = (score(), 0, {k: v.clone() for k, v in model.lambda_net.state_dict().items()}) \
        if select_every else None
    opt = torch.optim.SGD(model.lambda_net.parameters(), lr=lp.lr, momentum=lp.momentum)
    batches = IndexBatches(len(pool), lp.batch_size, gen)
    for step in progress(range(1, lp.steps + 1), total=lp.steps, desc="λ phase"):
        idx = next(batches)
        model.lambda_net.train()
        loss = F.cross_entropy(forward(idx), labels[idx].to(device))
        check_finite(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if best is not None and (step % select_every == 0 or step == lp.steps):
            acc = score()
            if acc > best[0]:
                best = (acc, step, {k: v.clone() for k, v in model.lambda_net.state_dict().items()})
    if best is not None:
        model.lambda_net.load_state_dict(best[2])
    model.lambda_net.eval()
    return {"pool_images": len(pool), "cached_feature_rows": int(feats.shape[0] * order),
            "selected_step": best[1] if best else None}


def endless(data: Indexed, batch_size: int, num_workers: int,
            gen: torch.Generator) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for _ in itertools.count():
        yield from loader(data, batch_size, num_workers, shuffle=True, gen=gen, drop_last=True)


def finetune(model: Symmetrizer, data: ClipData, transform: GroupAction, cfg: DictConfig,
             ctx: RunContext, settings: dict[str, Any], on_eval: Any) -> None:
    """SGD on the image tower (and λ or the canonicalizer unless frozen); cross-entropy on the
    model's output (logits; with the authors' ``probs`` head this is their double softmax),
    plus the canonicalizer's prior term while it learns (as on the image tasks)."""
    ft, device = cfg.task.finetune, ctx.device
    assert data.train is not None
    backbone = model.backbone
    for p in backbone.parameters():
        p.requires_grad_(True)
    params = list(backbone.visual.parameters())
    train_lambda = isinstance(model, LambdaEquitune) and not settings["freeze_lambda"]
    if train_lambda:
        params += list(model.lambda_net.parameters())
    prior_weight, canonicalizer = 0.0, []
    if isinstance(model, Canonicalize) and not cfg.method.freeze_canonicalizer:
        canonicalizer = list(model.canonicalizer.parameters())
        prior_weight = model.prior_weight
    opt = torch.optim.SGD(with_own_lr(params, canonicalizer, cfg.method.get("canonicalizer_lr")),
                          lr=ft.lr, momentum=ft.momentum, weight_decay=ft.weight_decay)
    gen = derived_generator(ctx.seed, "finetune")
    batches = endless(data.train, ft.batch_size, num_workers(cfg.task), gen)
    for step in progress(range(1, ft.steps + 1), total=ft.steps, desc="finetune"):
        x, y, _ = next(batches)
        g = transform_elements(len(x), transform.order, settings["transform_mode"], len(x), gen)
        model.train()               # equizero's straight-through gradient needs training mode,
        backbone.eval()             # but CLIP's BatchNorm statistics stay frozen
        if isinstance(model, LambdaEquitune) and not train_lambda:
            model.lambda_net.eval()
        x = x.to(device)
        loss = F.cross_entropy(model(transform.act_in(x, g.to(device))), y.to(device))
        if prior_weight:
            loss = loss + prior_weight * model.prior_loss(x)
        check_finite(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % ft.eval_every == 0 or step == ft.steps:
            on_eval(step)
    model.eval()


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    task, b, ev = cfg.task, cfg.backbone, cfg.task.eval
    out, device = Outcome(), ctx.device
    settings = effective_settings(cfg)
    need_train = task.finetune.steps > 0 or phase_steps(cfg.method) > 0
    workers = num_workers(task)

    seed_everything(ctx.seed)          # random init (backbone.pretrained=false) is seeded
    fetch = prefetch_command(task.name, b.name,
                             task.dataset if task.dataset != "cifar100" else None)
    loaded = build(b, "backbone", pretrained=bool(b.pretrained),
                   cache_dir=open_clip_cache(ctx.cache_dir), fetch=fetch)
    data = load_data(task, b.name, ctx.cache_dir, loaded.preprocess, need_train)
    backbone, info = build_backbone(cfg, ctx, (data.classnames, data.templates), settings, loaded)
    del loaded
    out.extra.update({"clip": info, "settings": settings, "pretrain": None,
                      "test_images": len(data.test)})

    identity = torch.zeros(len(data.test), dtype=torch.long)
    transform = image_group(task.transform)
    out.metrics["upright_accuracy"] = evaluate(backbone, data.test, identity, transform,
                                               ev.batch_size, workers, device)
    seed_everything(ctx.seed)
    action = build(cfg.group, "group")
    model = build_model(cfg, backbone, action, settings, ctx.seed).to(device)
    g_test = transform_elements(len(data.test), transform.order, settings["transform_mode"],
                                ev.batch_size, derived_generator(ctx.seed, "test_transform"))
    upright_probe = probe_images(data.test, ev.invariance_probe)
    probe = transform.act_in(upright_probe, g_test[: len(upright_probe)]).to(device)

    def accuracy() -> float:
        return evaluate(model, data.test, g_test, transform, ev.batch_size, workers, device)

    def invariance() -> float | None:
        model.eval()
        return equivariance_error(model, action, probe, invariant=True) if len(probe) else None

    def on_eval(step: int) -> None:
        acc = accuracy()
        out.add_point("test_accuracy", step, acc)
        ctx.logger.log_metrics({"test_accuracy": acc}, step=step)

    def upright_identity() -> float | None:
        """Share of the probe's images, upright, that the canonicalizer leaves as they are."""
        model.eval()
        return model.identity_share(upright_probe.to(device)) if len(upright_probe) else None

    mcfg = cfg.method
    if isinstance(model, Canonicalize):
        if mcfg.prior_phase.steps > 0:
            assert data.train is not None
            prior_phase(model, endless(data.train, mcfg.prior_phase.batch_size, workers,
                                       derived_generator(ctx.seed, "prior_phase")),
                        mcfg.prior_phase, device)
        out.metrics["zeroshot_upright_identity"] = upright_identity()
    out.metrics["zeroshot_accuracy"] = accuracy()
    out.metrics["zeroshot_invariance_error"] = invariance()
    out.metrics["zeroshot_upright_selected"] = upright_selected(model, probe, g_test, transform,
                                                                device)
    if isinstance(model, LambdaEquitune) and cfg.method.lambda_phase.steps > 0:
        assert data.train is not None
        out.extra["lambda_phase"] = train_lambda_phase(model, data.train, cfg, ctx, settings)
        out.metrics["lambda_phase_accuracy"] = accuracy()
        out.metrics["lambda_phase_upright_selected"] = upright_selected(
            model, probe, g_test, transform, device)
    elif isinstance(model, Canonicalize) and mcfg.canonicalizer_phase.steps > 0:
        assert data.train is not None
        ph, gen = mcfg.canonicalizer_phase, derived_generator(ctx.seed, "canonicalizer_phase")
        out.extra["canonicalizer_phase"] = canonicalizer_phase(
            model, endless(data.train, ph.batch_size, workers, gen), transform, len(data.train),
            ph, settings["transform_mode"], gen, device)
        out.metrics["canonicalizer_phase_accuracy"] = accuracy()
        out.metrics["canonicalizer_phase_upright_selected"] = upright_selected(
            model, probe, g_test, transform, device)
        out.metrics["canonicalizer_phase_upright_identity"] = upright_identity()
    first = next(out.metrics[k] for k in ("lambda_phase_accuracy", "canonicalizer_phase_accuracy",
                                          "zeroshot_accuracy") if k in out.metrics)
    out.add_point("test_accuracy", 0, first)
    if task.finetune.steps > 0:
        finetune(model, data, transform, cfg, ctx, settings, on_eval)
        out.metrics["finetuned_accuracy"] = out.curves["test_accuracy"][-1]["value"]
        out.metrics["finetuned_invariance_error"] = invariance()
        out.metrics["finetuned_upright_selected"] = upright_selected(model, probe, g_test,
                                                                     transform, device)
        if isinstance(model, Canonicalize):
            out.metrics["finetuned_upright_identity"] = upright_identity()
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.backbone.parameters())
    out.extra["parameters"] = {"image_tower": visual, "added": total - visual}
    out.summary = summary_lines(out, cfg)
    return out


def summary_lines(out: Outcome, cfg: DictConfig) -> list[tuple[str, str]]:
    m, t = out.metrics, cfg.task
    lines = [(f"{t.dataset} top-1, no transform (backbone alone)", m["upright_accuracy"]),
             (f"{t.dataset} top-1 under random {t.transform}, zero-shot", m["zeroshot_accuracy"])]
    lines += [(f"  {label}", m[f"{phase}_accuracy"])
              for label, phase in phases_run(m, cfg.method, "{}_accuracy")]
    if "finetuned_accuracy" in m:
        lines.append((f"  after finetuning ({t.finetune.steps} steps)", m["finetuned_accuracy"]))
    text = [(label, f"{100 * value:.2f} %") for label, value in lines]
    err = m.get("finetuned_invariance_error", m["zeroshot_invariance_error"])
    if err is not None:
        text.append((f"max |F(g·x) − F(x)| over {cfg.group.name} (invariance error)",
                     f"{err:.2e}"))
    return text
