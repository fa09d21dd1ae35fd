"""Pretraining stage of the SCAN seq2seq models: the "pretrained model" every method starts from.

Paper setting (Gordon et al. 2020 code): 200,000 iterations of one random training pair, Adam
lr 1e-4, teacher forcing 0.5, gradient-norm clipping 5, the best-validation checkpoint kept.
Here the same number of *examples* is drawn (with replacement) in padded minibatches of 32, so
there are 32x fewer updates: the rate is 1e-3 with a cosine decay instead of a constant 1e-4
(1e-4 reached 11% validation exact match after 1,500 steps, 1e-3 47%). The best validation
exact-match checkpoint is kept. Progress is checkpointed atomically at every
evaluation, so an interrupted pretraining resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from equiv.backbones.seq2seq import Seq2Seq
from equiv.experiments.scan.data import ScanData
from equiv.experiments.scan.evaluate import exact_match
from equiv.groups.words import identity_word_action
from equiv.methods.sequence import VanillaSeq2Seq
from equiv.train_state import PROGRESS_FILE, TrainState
from equiv.training import check_finite, derived_generator, progress


def pretrain_seq2seq(model: Seq2Seq, data: ScanData, p: DictConfig, folder: Path,
                     device: torch.device, eval_batch_size: int, max_len: int,
                     force: bool = False) -> dict[str, Any]:
    """Train ``model`` in place on ``data.train``; leave it at its best validation checkpoint.

    Resumes from ``folder/progress.pt`` (the cache folder is already specific to the stage's
    config); ``force`` ignores it, so that a corrupted file can be started over.
    """
    steps = math.ceil(p.examples / p.batch_size)
    eval_every = max(1, round(p.eval_every_examples / p.batch_size))
    torch.manual_seed(p.seed)                                   # dropout stream
    gen = derived_generator(p.seed, "scan-pretrain")            # batches and teacher forcing
    model.to(device).train()
    optimizer, scheduler = pretrain_optimizer(model, p, steps)
    plain = VanillaSeq2Seq(model, identity_word_action(len(data.in_vocab), len(data.out_vocab)))
    state = TrainState({"model": model, "optimizer": optimizer, "scheduler": scheduler,
                        "generator": gen},
                       {"best_val": -1.0, "best_step": 0, "history": [],
                        "best_model": copy.deepcopy(model.state_dict())})
    path = folder / PROGRESS_FILE
    config = folder.name                                # the stage's kind and config hash
    state.resume(path, config, force)
    record = state.progress                             # best checkpoint and history

    for step in progress(range(state.step + 1, steps + 1), total=steps - state.step,
                         desc="pretrain seq2seq"):
        loss = pretrain_update(model, data, p, gen, optimizer, scheduler, step, device)
        if step % eval_every == 0 or step == steps:
            val = exact_match(plain, data.val, eval_batch_size, max_len, device)
            record["history"].append({"step": step, "examples": step * p.batch_size,
                                      "val_acc": val, "loss": loss.item()})
            if val > record["best_val"]:
                record.update(best_val=val, best_step=step,
                              best_model=copy.deepcopy(model.state_dict()))
            state.step = step
            state.save(path, config)
    model.load_state_dict(record["best_model"])
    model.eval()
    return {"steps": steps, "batch_size": p.batch_size, "examples": steps * p.batch_size,
            "best_val_acc": record["best_val"], "best_step": record["best_step"],
            "history": record["history"]}


def pretrain_optimizer(model: Seq2Seq, p: DictConfig, steps: int
                       ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and its schedule over ``steps``. ``foreach``: the per-tensor loop's arithmetic in
    fewer calls (checked bit for bit on CPU); the step is overhead-bound."""
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr, foreach=True)
    return optimizer, _schedule(optimizer, p.schedule, steps)


def pretrain_update(model: Seq2Seq, data: ScanData, p: DictConfig, gen: torch.Generator,
                    optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int,
                    device: torch.device) -> torch.Tensor:
    """One update on a fresh minibatch (a pretraining step without its evaluations, as the
    benchmark times it); returns the minibatch loss."""
    src, tgt = data.train.batch(torch.randint(len(data.train), (p.batch_size,), generator=gen))
    loss = model.train_step_loss(src.to(device), tgt.to(device), p.teacher_forcing, gen)
    check_finite(loss, step, "seq2seq pretraining")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), p.clip_norm, foreach=True)
    optimizer.step()
    scheduler.step()
    return loss


def _schedule(optimizer: torch.optim.Optimizer, name: str,
              steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine``: decay to zero over the budget (batched training takes far fewer steps than the
    paper's 200,000, so the late steps need a small rate); ``constant``: the paper's."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown learning-rate schedule {name!r}; valid: cosine, constant")
