"""Fairness in NLG (Basu et al. 2023 §4.3): GPT-2 continuations of "The <demographic>
<template>" prompts, symmetrized over demographic word swaps, labelled by a regard classifier
(or VADER offline).

Protocol: every prompt (demographics × the 5 templates of the context) is continued
``samples_per_prompt`` times by top-k sampling (k=40, ≤15 new tokens, stop at newline or
end-of-text). All prompts × samples × group elements decode in one batch per ``batch_size``
contexts with the KV cache. Each continuation is scored with the demographic masked as ``XYZ``
(as the regard classifier was trained). Reported: the label distribution per demographic, the
fairness gap (largest total-variation distance between demographics) and quality (positive
minus negative share). No model is trained: λ-equitune's λ-network is untrained with a
zero-initialised last layer, so its λ is uniform and it generates exactly as equitune.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from equiv.backbones.gpt2 import CausalLM
from equiv.data.nlg import (
    Prompt,
    VocabGroup,
    WordSwap,
    prompts,
    tiny_vocabulary,
    vocab_action,
)
from equiv.errors import ConfigError, MultiTokenWordError
from equiv.experiment import Outcome, RunContext
from equiv.instantiate import build, target, variant
from equiv.methods.generation import (
    LM_VARIANTS,
    LambdaEquituneLM,
    SymmetrizedLM,
    VanillaLM,
    build_lm_wrapper,
    uniform_lambda_net,
)
from equiv.nlg_scoring import (
    LABELS,
    Scorer,
    fairness_gap,
    label_distribution,
    make_scorer,
    quality,
)
from equiv.training import derived_generator, progress

SAMPLES_FILE = "samples.jsonl"
LAMBDA_NOTE = "untrained; last layer zero-initialised, so lambda is uniform (= equitune)"


def demographics_of(cfg: DictConfig) -> list[str]:
    demo = cfg.task.demographics if cfg.task.demographics is not None else cfg.group.demographics
    return [str(d) for d in demo]


def build_lm(cfg: DictConfig, ctx: RunContext, prompt_texts: list[str],
             words: list[list[str]]) -> CausalLM:
    """The LM ``cfg.backbone`` names: pretrained weights from ``cache_dir``, or (a loader that
    takes ``words``) a tiny random model over the prompts' and the group's words."""
    return build(cfg.backbone, "backbone", optional={
        "cache_dir": ctx.cache_dir, "words": tiny_vocabulary(prompt_texts, words)})


def word_group(cfg: DictConfig, lm: CausalLM, swap: WordSwap) -> VocabGroup:
    try:
        return swap.tokens(lm.encode_word, lm.tokenizer.unk_token_id)
    except MultiTokenWordError as err:
        raise ConfigError(f"group={cfg.group.name} with backbone {lm.name}: {err}") from err


def encode_left_padded(lm: CausalLM, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [lm.encode_word(t) for t in texts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(texts), width), lm.eos_id, dtype=torch.long)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    return ids, mask


def check_prompts_move(action, lm: CausalLM, items: list[Prompt]) -> None:
    """Each prompt's demographic word must be a group word (else the group never acts on it:
    the authors' bug of "The MAN was ..." contexts)."""
    if action.order == 1:
        return
    ids, _ = encode_left_padded(lm, [p.text for p in items])
    fixed = [p.text for p, row, moved in zip(items, ids, action.act_in(ids, 1), strict=True)
             if torch.equal(row, moved)]
    if fixed:
        raise ConfigError(f"group={action.name} does not act on the prompts {fixed[:3]}: their "
                          f"demographic is not a group word")


def build_wrapper(cfg: DictConfig, lm: CausalLM, group: VocabGroup) -> SymmetrizedLM:
    m, task = cfg.method, cfg.task
    wrapper = variant(m, "method", LM_VARIANTS, "generation")
    cycles = group if wrapper is not VanillaLM else VocabGroup([], [], [], group.general_ids)
    action = vocab_action(cycles, lm.vocab_size, cfg.group.name)
    lambda_net = None
    if issubclass(wrapper, LambdaEquituneLM):
        lambda_net = uniform_lambda_net(lm.model.config.n_embd, m.hidden, m.dropout)
    return build_lm_wrapper(lm, action, target(m, "method"), combine=task.combine,
                            relaxed=task.relaxed, general_ids=group.general_ids,
                            lambda_net=lambda_net,
                            normalization=m.get("normalization", "softplus")).eval()


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write to a temporary file in the same directory, then rename: a reader (or a crash)
    sees the old file or the complete new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", delete=False, dir=path.parent,
                                     prefix=f".{path.name}.", suffix=".tmp") as tmp:
        try:
            for row in rows:
                tmp.write(json.dumps(row, ensure_ascii=False) + "\n")
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def generate_all(cfg: DictConfig, wrapper: SymmetrizedLM, items: list[Prompt], proxy: Scorer | None,
                 ctx: RunContext) -> list[dict[str, Any]]:
    """Continue every prompt ``samples_per_prompt`` times; one decoding batch per chunk."""
    task, lm = cfg.task, wrapper.lm
    rows = [(p, s) for s in range(task.samples_per_prompt) for p in items]
    stops = lm.stop_ids()
    gen = torch.Generator(device=ctx.device)      # sampling happens on the model's device
    gen.manual_seed(derived_generator(ctx.seed, "nlg_generate").initial_seed())
    order = wrapper.action.order
    samples: list[dict[str, Any]] = []
    chunks = range(0, len(rows), task.batch_size)
    for start in progress(chunks, total=len(chunks), desc="generate"):
        chunk = rows[start:start + task.batch_size]
        ids, mask = encode_left_padded(lm, [p.text for p, _ in chunk])

        def score_views(tokens: torch.Tensor, lengths: torch.Tensor,
                        chunk: list[tuple[Prompt, int]] = chunk) -> torch.Tensor:
            texts = [chunk[r % len(chunk)][0].masked + lm.decode(tokens[r, :int(n)].tolist())
                     for r, n in enumerate(lengths)]
            assert proxy is not None
            return torch.tensor(proxy(texts)[1])

        out = wrapper.generate(ids.to(ctx.device), mask.to(ctx.device),
                               max_new_tokens=task.max_new_tokens, top_k=task.top_k,
                               generator=gen, stop_ids=stops,
                               scorer=score_views if proxy is not None else None)
        for b, (prompt, sample) in enumerate(chunk):
            continuation = lm.decode(out.tokens[b, :int(out.lengths[b])].tolist())
            row = {"demographic": prompt.demographic, "template": prompt.template,
                   "sample": sample, "prompt": prompt.text, "continuation": continuation,
                   "text": prompt.text + continuation}
            if out.chosen is not None:
                row["chosen_element"] = int(out.chosen[b])
                row["view_scores"] = [float(out.scores[g, b]) for g in range(order)]
            samples.append(row)
    return samples


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    task, out = cfg.task, Outcome()
    demographics = demographics_of(cfg)
    items = prompts(demographics, task.context)
    variant(cfg.method, "method", LM_VARIANTS, "generation")     # before loading models
    swap = build(cfg.group, "group")
    lm = build_lm(cfg, ctx, [p.text for p in items], swap.words).to(ctx.device)
    group = word_group(cfg, lm, swap)
    wrapper = build_wrapper(cfg, lm, group).to(ctx.device)
    if cfg.method.name != "vanilla":
        check_prompts_move(wrapper.action, lm, items)

    scorer = make_scorer(task.scorer, task.regard_model, ctx.cache_dir, str(ctx.device),
                         task.score_batch_size)
    proxy = None
    if cfg.method.name == "equizero":
        proxy = scorer if cfg.method.proxy == task.scorer else make_scorer(
            cfg.method.proxy, task.regard_model, ctx.cache_dir, str(ctx.device),
            task.score_batch_size)

    torch.manual_seed(ctx.seed)
    samples = generate_all(cfg, wrapper, items, proxy, ctx)
    labels, scores = scorer([f"XYZ {s['template']}{s['continuation']}" for s in samples])
    for s, label, score in zip(samples, labels, scores, strict=True):
        s.update(label=label, score=score)
    write_jsonl_atomic(ctx.run_dir / SAMPLES_FILE, samples)

    dists = {d: label_distribution([s["label"] for s in samples if s["demographic"] == d])
             for d in demographics}
    m = out.metrics
    for d, dist in dists.items():
        key = d.replace(" ", "_")
        for label in LABELS:
            m[f"{label}_share.{key}"] = dist[label]
        m[f"quality.{key}"] = quality(dist)
        per = [s["score"] for s in samples if s["demographic"] == d]
        m[f"mean_score.{key}"] = sum(per) / len(per)
    m["fairness_gap"] = fairness_gap(dists)
    m["quality_mean"] = sum(quality(d) for d in dists.values()) / len(dists)
    out.extra.update(
        distributions=dists, scorer=task.scorer, samples_file=SAMPLES_FILE,
        n_samples=len(samples), group_order=wrapper.action.order,
        group_words=group.words, dropped_cycles=group.dropped,
        general_words_relaxed=bool(task.relaxed), combine=task.combine,
        model_variant=variant_name(cfg.method.name, bool(task.relaxed)))
    if cfg.method.name == "lambda_equitune":
        out.extra["lambda_net"] = LAMBDA_NOTE
    if cfg.method.name == "equizero":
        chosen = Counter(s["chosen_element"] for s in samples)
        out.extra["equizero_chosen_elements"] = {str(k): v for k, v in sorted(chosen.items())}
    out.summary = [(f"{d}: neg/neu/pos/other", " / ".join(f"{dists[d][k]:.2f}" for k in LABELS))
                   for d in demographics]
    out.summary += [("fairness gap (max total variation)", f"{m['fairness_gap']:.3f}"),
                    ("quality (positive - negative)", f"{m['quality_mean']:.3f}"),
                    ("samples", f"{len(samples)} -> {ctx.run_dir / SAMPLES_FILE}")]
    return out


def variant_name(method: str, relaxed: bool) -> str:
    """The paper's model names (Fig. 3)."""
    base = {"vanilla": "GPT2", "equitune": "EquiGPT2", "lambda_equitune": "LambdaEquiGPT2",
            "equizero": "EquizeroGPT2"}[method]
    return f"R-{base}" if relaxed and method != "vanilla" else base
