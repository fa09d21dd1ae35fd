"""SCAN compositional generalisation: a pretrained seq2seq model, symmetrized, zero-shot and
finetuned (Basu et al. 2023 §SCAN; the data split and groups of Gordon et al. 2020).

Protocol: one seq2seq model per (split, cell, pretraining seed) is pretrained on the split's
training commands (cached, shared by every method). Each method wraps it; exact-match accuracy on
the validation and test commands is measured before finetuning (zero-shot) and every
``eval_every`` finetuning iterations; the reported finetuned numbers are those of the
best-validation evaluation (the authors report the last model's). λ-equitune is measured
zero-shot with its untrained λ, then trains its λ-network alone with the backbone frozen (the
"λ phase", measured again) before finetuning. Canonicalization first fits its canonicalizer to
the prior alone (the "prior phase": every training command is its own canonical view), is
measured zero-shot, then trains the canonicalizer on the task loss plus the prior with the
backbone frozen (the "canonicalizer phase", measured again) before finetuning. Every run also
records the group's view ceiling and the in-training-view oracle (``views.py``). Finetuning
checkpoints at every evaluation and resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from equiv.backbones.seq2seq import Seq2Seq
from equiv.checkpoints import fingerprint
from equiv.experiment import Outcome, RunContext, phases_run
from equiv.experiments.scan.data import ScanData, load
from equiv.experiments.scan.evaluate import equivariance_agreement, exact_match
from equiv.experiments.scan.pretrain import pretrain_seq2seq
from equiv.experiments.scan.views import (
    command_ids,
    in_training_views,
    oracle_exact_match,
    training_file_commands,
    view_ceiling,
)
from equiv.groups import GroupAction
from equiv.groups.words import identity_word_action
from equiv.instantiate import build, target, variant
from equiv.methods import LambdaNet
from equiv.methods.sequence import (
    SEQ2SEQ_VARIANTS,
    CanonicalizeSeq2Seq,
    LambdaEquituneSeq2Seq,
    SymmetrizedSeq2Seq,
    VanillaSeq2Seq,
    build_seq2seq_wrapper,
)
from equiv.pretraining import backbone_key, cached_pretrain
from equiv.train_state import PROGRESS_FILE, TrainState
from equiv.training import (
    check_finite,
    derived_generator,
    progress,
    seed_everything,
    with_own_lr,
)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def effective_settings(cfg: DictConfig) -> dict[str, str]:
    """Combination, proxy and model selection; ``paper_code_compat`` switches to the authors'."""
    task = cfg.task
    if task.paper_code_compat:
        return {"combine": "logprob", "proxy": "mean_max_prob_padded", "select": "last"}
    return {"combine": task.combine, "proxy": cfg.method.get("proxy", task.equizero_proxy),
            "select": task.select_model}


def build_backbone(cfg: DictConfig, data: ScanData) -> Seq2Seq:
    """The seq2seq model ``cfg.backbone`` names, for the split's vocabularies."""
    return build(cfg.backbone, "backbone", in_vocab=len(data.in_vocab),
                 out_vocab=len(data.out_vocab))


def word_group(cfg: DictConfig, data: ScanData) -> GroupAction:
    """The group ``cfg.group`` names, on the split's vocabularies; the trivial group as identity
    permutations of both (the sequence machinery acts on token ids)."""
    action = build(cfg.group, "group", optional={"in_vocab": data.in_vocab,
                                                 "out_vocab": data.out_vocab})
    if action.order == 1:
        return identity_word_action(len(data.in_vocab), len(data.out_vocab))
    return action


def pretrained_backbone(cfg: DictConfig, data: ScanData, ctx: RunContext,
                        out: Outcome) -> Seq2Seq:
    task = cfg.task
    torch.manual_seed(task.pretrain.seed)            # the initial weights the pretraining uses
    model = build_backbone(cfg, data)
    if not cfg.backbone.pretrained:
        out.extra["pretrain"] = None
        return model
    key = {"split": task.split, "data": _plain(task.data),
           "backbone": backbone_key(_plain(cfg.backbone)), "pretrain": _plain(task.pretrain),
           "max_len": task.max_decode_len}
    meta, path = cached_pretrain(
        ctx.cache_dir, f"scan-{task.split}-{cfg.backbone.name}", key, model,
        lambda m, folder: pretrain_seq2seq(m, data, task.pretrain, folder, ctx.device,
                                           task.eval_batch_size, task.max_decode_len,
                                           force=bool(cfg.force)),
        checkpoint=cfg.backbone.get("checkpoint"))
    out.extra["pretrain"] = {**meta, "checkpoint": str(path)}
    if "best_val_acc" in meta["report"]:             # not for a given checkpoint
        out.metrics["pretrained_val_acc"] = meta["report"]["best_val_acc"]
    return model


def build_wrapper(cfg: DictConfig, model: Seq2Seq, data: ScanData) -> SymmetrizedSeq2Seq:
    m, settings = cfg.method, effective_settings(cfg)
    wrapper = variant(m, "method", SEQ2SEQ_VARIANTS, "seq2seq")
    action = word_group(cfg, data)
    lambda_net = None
    if issubclass(wrapper, LambdaEquituneSeq2Seq):
        lambda_net = LambdaNet(model.hidden, hidden=m.hidden, dropout=m.dropout)
    canonical: dict[str, Any] = {}
    if issubclass(wrapper, CanonicalizeSeq2Seq):   # its own seed: the run's random stream stays
        seed = derived_generator(cfg.seed, "canonicalizer").initial_seed()
        canonical = {"canonicalizer": build(m.canonicalizer, "canonicalizer", action=action,
                                            optional={"vocab_size": len(data.in_vocab),
                                                      "seed": seed}),
                     "gradient": m.gradient, "temperature": m.temperature,
                     "prior_weight": m.prior_weight}
    return build_seq2seq_wrapper(
        model, action, target(m, "method"), combine=settings["combine"], lambda_net=lambda_net,
        normalization=m.get("normalization", "softplus"), proxy=settings["proxy"],
        surrogate=m.get("surrogate", "equitune"),
        detach_features=m.get("detach_features", True), **canonical)


class Evaluator:
    """Exact match on validation and test, logged as curves; remembers the best validation."""

    def __init__(self, cfg: DictConfig, wrapper: SymmetrizedSeq2Seq, data: ScanData,
                 ctx: RunContext, out: Outcome) -> None:
        self.wrapper, self.data, self.ctx, self.out = wrapper, data, ctx, out
        self.batch, self.max_len = cfg.task.eval_batch_size, cfg.task.max_decode_len

    def __call__(self, step: int | None = None) -> tuple[float, float]:
        accs = tuple(exact_match(self.wrapper, part, self.batch, self.max_len, self.ctx.device)
                     for part in (self.data.val, self.data.test))
        if step is not None:
            for name, acc in zip(("val_acc", "test_acc"), accs, strict=True):
                self.out.add_point(name, step, acc)
            self.ctx.logger.log_metrics({"val_acc": accs[0], "test_acc": accs[1]}, step=step)
        return accs

    def agreement(self) -> float:
        probe = self.data.test.src[: 512]
        element = 1 if self.wrapper.action.order > 1 else 0
        return equivariance_agreement(self.wrapper, probe, element, self.batch, self.max_len,
                                      self.ctx.device)


def view_metrics(cfg: DictConfig, wrapper: SymmetrizedSeq2Seq, data: ScanData,
                 ctx: RunContext) -> dict[str, float]:
    """The run group's view ceiling on the test commands and the oracle's exact match.

    ``test_view_ceiling`` counts views in the split's training file (the training distribution:
    the pretrained model decodes its validation hold-out almost as well as its training part,
    and methods exceed a ceiling taken over the training part alone);
    ``test_view_ceiling_seen`` over the commands the model was trained on, for reference. The
    oracle decodes with the pretrained backbone before any λ phase or finetuning.
    """
    action = word_group(cfg, data)
    hits = in_training_views(data.test.src, action,
                             training_file_commands(cfg.task.split, data.in_vocab))
    seen = in_training_views(data.test.src, action,
                             command_ids([c for c, _ in data.train.pairs], data.in_vocab))
    plain = VanillaSeq2Seq(wrapper.model, identity_word_action(len(data.in_vocab),
                                                               len(data.out_vocab)))
    oracle = oracle_exact_match(plain, action, data.test, hits, cfg.task.eval_batch_size,
                                cfg.task.max_decode_len, ctx.device)
    return {"test_view_ceiling": view_ceiling(hits), "test_view_ceiling_seen": view_ceiling(seen),
            "test_acc_oracle": oracle}


def train_lambda_only(cfg: DictConfig, wrapper: SymmetrizedSeq2Seq, data: ScanData,
                      ctx: RunContext) -> None:
    """λ phase: only the λ-network learns (combined NLL, teacher forcing as in finetuning)."""
    lp, ft = cfg.method.lambda_phase, cfg.task.finetune
    assert wrapper.lambda_net is not None
    for p in wrapper.model.parameters():
        p.requires_grad_(False)
    wrapper.model.eval()
    wrapper.lambda_net.train()
    gen = derived_generator(ctx.seed, "lambda_phase")
    optimizer = torch.optim.Adam(wrapper.lambda_net.parameters(), lr=lp.lr)
    for step in progress(range(1, lp.steps + 1), total=lp.steps, desc="lambda phase"):
        src, tgt = data.train.batch(torch.randint(len(data.train), (lp.batch_size,),
                                                  generator=gen))
        loss = wrapper.loss(src.to(ctx.device), tgt.to(ctx.device), ft.teacher_forcing, gen,
                            cfg.task.max_decode_len)
        check_finite(loss, step, "the lambda phase")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in wrapper.model.parameters():
        p.requires_grad_(True)


def train_canonicalizer_only(cfg: DictConfig, wrapper: CanonicalizeSeq2Seq, data: ScanData,
                             ctx: RunContext, phase: str) -> None:
    """Adam on the canonicalizer alone, on random training pairs. ``phase="prior_phase"``:
    the prior loss only (no backbone); ``"canonicalizer_phase"``: the task loss
    (straight-through, backbone frozen, teacher forcing as in finetuning) plus
    ``prior_weight`` times the prior loss."""
    node, ft = cfg.method[phase], cfg.task.finetune
    for p in wrapper.model.parameters():
        p.requires_grad_(False)
    wrapper.model.eval()
    wrapper.canonicalizer.train()
    gen = derived_generator(ctx.seed, phase)
    optimizer = torch.optim.Adam(wrapper.canonicalizer.parameters(), lr=node.lr)
    for step in progress(range(1, node.steps + 1), total=node.steps, desc=phase.replace("_", " ")):
        src, tgt = data.train.batch(torch.randint(len(data.train), (node.batch_size,),
                                                  generator=gen))
        src = src.to(ctx.device)
        loss = wrapper.prior_loss(src)
        if phase == "canonicalizer_phase":
            loss = wrapper.loss(src, tgt.to(ctx.device), ft.teacher_forcing, gen,
                                cfg.task.max_decode_len) + wrapper.prior_weight * loss
        check_finite(loss, step, f"the {phase.replace('_', ' ')}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in wrapper.model.parameters():
        p.requires_grad_(True)


@torch.no_grad()
def selection_metrics(wrapper: CanonicalizeSeq2Seq, data: ScanData, hits: torch.Tensor,
                      batch_size: int, device: torch.device) -> dict[str, float]:
    """Where the canonicalizer sends the test commands: the share whose canonical view is the
    command itself (``identity_share``) and the share whose canonical view is in the split's
    training file (``canonical_in_training``; at most the view ceiling)."""
    was_training = wrapper.training
    wrapper.eval()
    try:
        best = torch.cat([wrapper.select(src.to(device))[0].cpu()
                          for src in data.test.src.split(batch_size)])
    finally:
        wrapper.train(was_training)
    chosen = hits[best, torch.arange(best.shape[0])]
    return {"identity_share": (best == 0).double().mean().item(),
            "canonical_in_training": chosen.double().mean().item()}


def canonicalizer_phases(cfg: DictConfig, wrapper: CanonicalizeSeq2Seq, data: ScanData,
                         ctx: RunContext, evaluate: Evaluator, m: dict[str, Any],
                         record: Callable[[str], None]) -> None:
    """Prior phase, zero-shot evaluation, canonicalizer phase and its evaluation, each
    followed by ``record`` (where the test commands are sent)."""
    train_canonicalizer_only(cfg, wrapper, data, ctx, "prior_phase")
    wrapper.eval()
    record("zero_shot")
    if cfg.method.canonicalizer_phase.steps > 0:
        m["val_acc_zero_shot"], m["test_acc_zero_shot"] = evaluate()
        train_canonicalizer_only(cfg, wrapper, data, ctx, "canonicalizer_phase")
        wrapper.eval()
        m["val_acc_canonicalizer_phase"], m["test_acc_canonicalizer_phase"] = evaluate(0)
        record("canonicalizer_phase")
    else:
        m["val_acc_zero_shot"], m["test_acc_zero_shot"] = evaluate(0)


def finetune(cfg: DictConfig, wrapper: SymmetrizedSeq2Seq, data: ScanData, ctx: RunContext,
             evaluate: Evaluator, out: Outcome) -> dict[str, Any]:
    """Adam on the backbone (and λ or the canonicalizer unless frozen; canonicalization adds
    ``prior_weight`` times its prior loss on the batch's commands), one evaluation every
    ``eval_every`` updates (with the loss of that update's minibatch as the ``train_loss``
    curve); resumable from ``progress.pt`` in the run directory. Curve steps and the selected
    step count training examples (updates × batch size)."""
    ft = cfg.task.finetune
    params = list(wrapper.model.parameters())
    if wrapper.lambda_net is not None and not cfg.method.freeze_lambda:
        params += list(wrapper.lambda_net.parameters())
    prior_weight, canonicalizer = 0.0, []
    if isinstance(wrapper, CanonicalizeSeq2Seq):
        if cfg.method.freeze_canonicalizer:
            wrapper.canonicalizer.requires_grad_(False)
        else:
            canonicalizer = list(wrapper.canonicalizer.parameters())
            prior_weight = wrapper.prior_weight
    optimizer = torch.optim.Adam(
        with_own_lr(params, canonicalizer, cfg.method.get("canonicalizer_lr")),
        lr=ft.lr, weight_decay=ft.weight_decay)
    gen = derived_generator(ctx.seed, "finetune")
    val0, test0 = out.curves["val_acc"][-1]["value"], out.curves["test_acc"][-1]["value"]
    state = TrainState({"model": wrapper, "optimizer": optimizer, "generator": gen},
                       {"best": {"step": 0, "val_acc": val0, "test_acc": test0},
                        "curves": out.curves})
    path, config = ctx.run_dir / PROGRESS_FILE, fingerprint(_plain(cfg))
    if state.resume(path, config, force=bool(cfg.force)):
        out.curves = state.progress["curves"]      # the points logged before the checkpoint
    wrapper.train()
    n = len(data.train)
    for step in progress(range(state.step + 1, ft.iterations + 1),
                         total=ft.iterations - state.step, desc="finetune"):
        src, tgt = data.train.batch(torch.randint(n, (ft.batch_size,), generator=gen))
        loss = wrapper.loss(src.to(ctx.device), tgt.to(ctx.device), ft.teacher_forcing, gen,
                            cfg.task.max_decode_len)
        if prior_weight:
            loss = loss + prior_weight * wrapper.prior_loss(src.to(ctx.device))
        check_finite(loss, step, "finetuning")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, ft.clip_norm)
        optimizer.step()
        if step % ft.eval_every == 0 or step == ft.iterations:
            seen = step * ft.batch_size      # curves count training examples, as the paper's
            val, test = evaluate(seen)       # batch-1 "iterations" do
            out.add_point("train_loss", seen, loss.item())       # that update's minibatch loss
            if val > state.progress["best"]["val_acc"]:
                state.progress["best"] = {"step": seen, "val_acc": val, "test_acc": test}
            state.step = step
            state.save(path, config)
    return state.progress["best"]


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    task, out = cfg.task, Outcome()
    variant(cfg.method, "method", SEQ2SEQ_VARIANTS, "seq2seq")       # before pretraining
    data = load(task.split, task.data.validation_fraction, task.data.split_seed,
                task.data.get("eval_limit"))
    model = pretrained_backbone(cfg, data, ctx, out).to(ctx.device)

    seed_everything(ctx.seed)
    wrapper = build_wrapper(cfg, model, data).to(ctx.device)
    wrapper.eval()
    evaluate = Evaluator(cfg, wrapper, data, ctx, out)
    settings = effective_settings(cfg)
    out.extra["settings"] = settings
    m = out.metrics
    m.update(view_metrics(cfg, wrapper, data, ctx))
    if isinstance(wrapper, CanonicalizeSeq2Seq):
        hits = in_training_views(data.test.src, wrapper.action,
                                 training_file_commands(task.split, data.in_vocab))

        def record(stage: str) -> None:
            suffix = f"_{stage}" if stage else ""
            for key, value in selection_metrics(wrapper, data, hits, task.eval_batch_size,
                                                ctx.device).items():
                m[f"test_{key}{suffix}"] = value

        canonicalizer_phases(cfg, wrapper, data, ctx, evaluate, m, record)
    elif wrapper.lambda_net is not None and cfg.method.lambda_phase.steps > 0:
        # As the image family: zero-shot = the untrained λ; then the λ phase; finetuning (and
        # its step-0 curve point) starts from the trained λ.
        m["val_acc_zero_shot"], m["test_acc_zero_shot"] = evaluate()
        train_lambda_only(cfg, wrapper, data, ctx)
        wrapper.eval()
        m["val_acc_lambda_phase"], m["test_acc_lambda_phase"] = evaluate(0)
    else:
        m["val_acc_zero_shot"], m["test_acc_zero_shot"] = evaluate(0)
    m["equivariance_agreement_zero_shot"] = evaluate.agreement()

    best = {"step": 0, **{f"{k}_acc": out.curves[f"{k}_acc"][-1]["value"]
                          for k in ("val", "test")}}
    if task.finetune.iterations > 0:
        best = finetune(cfg, wrapper, data, ctx, evaluate, out)
        m["equivariance_agreement"] = evaluate.agreement()
        if isinstance(wrapper, CanonicalizeSeq2Seq):
            record("")
    last = {k: out.curves[f"{k}_acc"][-1]["value"] for k in ("val", "test")}
    if settings["select"] == "last":
        m["val_acc"], m["test_acc"], m["selected_step"] = last["val"], last["test"], \
            out.curves["test_acc"][-1]["step"]
    else:
        m["val_acc"], m["test_acc"], m["selected_step"] = best["val_acc"], best["test_acc"], \
            best["step"]
    m["val_acc_last"], m["test_acc_last"] = last["val"], last["test"]
    out.extra["parameters"] = {"backbone": sum(p.numel() for p in model.parameters()),
                               "added": sum(p.numel() for p in wrapper.parameters())
                               - sum(p.numel() for p in model.parameters())}
    out.summary = summary_lines(out, cfg)
    (ctx.run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    return out


def summary_lines(out: Outcome, cfg: DictConfig) -> list[tuple[str, str]]:
    m, ft = out.metrics, cfg.task.finetune
    lines: list[tuple[str, str]] = []
    if "pretrained_val_acc" in m:
        lines.append(("pretrained model, validation exact match", f"{m['pretrained_val_acc']:.4f}"))
    lines.append((f"test view ceiling ({cfg.group.name}) / oracle (in-training view)",
                  f"{m['test_view_ceiling']:.4f} / {m['test_acc_oracle']:.4f}"))
    lines.append(("val / test exact match, zero-shot",
                  f"{m['val_acc_zero_shot']:.4f} / {m['test_acc_zero_shot']:.4f}"))
    lines += [(label, f"{m[f'val_acc_{phase}']:.4f} / {m[f'test_acc_{phase}']:.4f}")
              for label, phase in phases_run(m, cfg.method, "test_acc_{}")]
    stages = [s for s in ("zero_shot", "canonicalizer_phase") if f"test_identity_share_{s}" in m]
    if stages:
        shares = [(m[f"test_identity_share_{s}"], m[f"test_canonical_in_training_{s}"])
                  for s in stages] + ([(m["test_identity_share"], m["test_canonical_in_training"])]
                                      if "test_identity_share" in m else [])
        names = [*stages, "finetuned"][: len(shares)]
        lines.append((f"test views chosen: itself / in training ({', '.join(names)})",
                      ", ".join(f"{a:.3f} / {b:.3f}" for a, b in shares)))
    if ft.iterations > 0:
        lines.append((f"after finetuning ({ft.iterations * ft.batch_size} examples; "
                      f"selected at {m['selected_step']})",
                      f"{m['val_acc']:.4f} / {m['test_acc']:.4f}"))
    key = "equivariance_agreement" if "equivariance_agreement" in m else \
        "equivariance_agreement_zero_shot"
    lines.append((f"decode(g·x) = g·decode(x) on 512 test commands ({cfg.group.name})",
                  f"{m[key]:.4f}"))
    return lines
