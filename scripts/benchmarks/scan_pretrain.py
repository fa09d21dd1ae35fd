"""SCAN pretraining: milliseconds per update and per validation pass, on one thread.

Unlike the other sections this one reports absolute times (there is no second side in the same
process): the cost of regenerating the SCAN table is 18 pretrainings of 6,250 such updates and
10 validation passes each. Times are thread CPU time, which other jobs on the machine inflate
less than wall time; medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scripts.benchmarks.common import ROOT, Section

CELLS = ("rnn", "gru", "lstm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan-pretrain-updates", type=int, default=40,
                        help="updates per timed repeat")
    parser.add_argument("--scan-pretrain-repeats", type=int, default=5)


def cpu_seconds(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def cell_row(cell: str, args: argparse.Namespace) -> list[str]:
    from omegaconf import OmegaConf

    from equiv.backbones.seq2seq import Seq2Seq
    from equiv.config import CONFIG_DIR
    from equiv.experiments.scan.data import load
    from equiv.experiments.scan.evaluate import exact_match
    from equiv.experiments.scan.pretrain import pretrain_optimizer, pretrain_update
    from equiv.groups.words import identity_word_action
    from equiv.methods.sequence import VanillaSeq2Seq
    from equiv.training import derived_generator

    task = OmegaConf.load(CONFIG_DIR / "task" / "scan_add_jump.yaml").task
    p = task.pretrain
    steps = -(-p.examples // p.batch_size)
    data = load("add_jump", task.data.validation_fraction, task.data.split_seed)
    torch.manual_seed(0)
    model = Seq2Seq(len(data.in_vocab), len(data.out_vocab), hidden=64, cell=cell).train()
    optimizer, scheduler = pretrain_optimizer(model, p, steps)
    gen = derived_generator(0, "scan-pretrain")
    cpu = torch.device("cpu")

    def updates() -> None:
        for step in range(1, args.scan_pretrain_updates + 1):
            pretrain_update(model, data, p, gen, optimizer, scheduler, step, cpu)

    updates()                                                       # warm-up
    per_update = statistics.median(cpu_seconds(updates) for _ in range(args.scan_pretrain_repeats)
                                   ) / args.scan_pretrain_updates
    # validation on a pretrained model if one is cached (real output lengths), else as is
    found = sorted((ROOT / "cache" / "pretrained").glob(f"scan-add_jump-seq2seq_{cell}-*/model.pt"))
    if found:
        model.load_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
    plain = VanillaSeq2Seq(model, identity_word_action(len(data.in_vocab), len(data.out_vocab)))
    val_s = statistics.median(
        cpu_seconds(lambda: exact_match(plain, data.val, task.eval_batch_size,
                                        task.max_decode_len, cpu)) for _ in range(3))
    evals = -(-steps // max(1, round(p.eval_every_examples / p.batch_size)))
    total_min = (steps * per_update + evals * val_s) / 60
    return [cell.upper(), f"{per_update * 1000:.1f}", f"{val_s:.2f}",
            "pretrained" if found else "after the timed updates", f"{total_min:.1f}"]


def bench(args: argparse.Namespace) -> Section:
    rows = [cell_row(cell, args) for cell in CELLS]
    return Section(
        "SCAN pretraining: CPU time per update and per validation pass",
        settings=["add_jump, the task's pretraining settings (batch 32, Adam with cosine "
                  "decay, teacher forcing 0.5, clip 5), hidden-64 seq2seq with attention; one "
                  f"thread; {args.scan_pretrain_repeats} repeats of "
                  f"{args.scan_pretrain_updates} updates, median thread CPU time "
                  "(absolute: no second side)",
                  "an update is `pretrain_update`: a minibatch, the teacher-forced loss, "
                  "backward, gradient clipping, Adam, the schedule; a validation pass is the "
                  "exact match of greedy decoding on the validation hold-out (what "
                  "pretraining runs every 20,000 examples to keep its best checkpoint)",
                  "estimate: 6,250 updates and 10 validation passes per pretrained model"],
        header=["cell", "ms / update", "validation pass (s)", "validated model",
                "estimated CPU-min per model"],
        rows=rows)
