"""NLG: EquiGPT2 generation batched with the KV cache vs the authors' loop (batch 1, the full
prefix recomputed for every new token, one group element after another)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from scripts.benchmarks.common import Section, peak_allocated_mb, timed

# name: (n_layer, n_embd, n_head, vocabulary size or None = the word list's)
MODELS: dict[str, tuple[int, int, int, int | None]] = {
    "tiny": (2, 32, 2, None),             # the tests' model: word-level vocabulary (~100 words)
    "gpt2-width": (2, 768, 12, 50257),    # GPT-2 small's width, heads and vocabulary, 2 layers
}
DEMOGRAPHICS = {"race": ["Black person", "White person"],
                "race3": ["Black person", "White person", "Asian person"],
                "gender": ["man", "woman"]}
TOP_K = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nlg-models", default="tiny,gpt2-width",
                        help=f"comma-separated, from: {', '.join(MODELS)} (random weights)")
    parser.add_argument("--nlg-lengths", default="15,30,60", help="new tokens per context")
    parser.add_argument("--nlg-group", choices=sorted(DEMOGRAPHICS), default="race")
    parser.add_argument("--nlg-samples", type=int, default=10,
                        help="samples per prompt on the batched side (× demographics × 5 "
                             "respect templates contexts, all in one batch)")
    parser.add_argument("--nlg-loop-sample", type=int, default=3,
                        help="contexts decoded one at a time by the loop sides (rates scaled)")
    parser.add_argument("--nlg-repeats", type=int, default=3,
                        help="timings per side, interleaved; the fastest counts (busy machine)")
    parser.add_argument("--nlg-no-memory", action="store_true",
                        help="skip the (profiled) peak-memory runs")


# -- the authors' approach, re-implemented minimally ---------------------------------------------
@dataclass
class LoopGroup:
    """The group as the authors' loop uses it: a token map per element for the context, and
    per element the vocabulary index that maps a view's logits back by g⁻¹."""

    token_maps: list[dict[int, int]]
    back_index: list[torch.Tensor]


def loop_group(action, cycles: Sequence[Sequence[int]], vocab_size: int) -> LoopGroup:
    words = torch.tensor([[t for c in cycles for t in c]])
    maps, back = [], []
    for g in action.elements:
        moved = action.act_in(words, g)[0].tolist()
        maps.append(dict(zip(words[0].tolist(), moved, strict=True)))
        ids = torch.arange(vocab_size).unsqueeze(0)
        back.append(action.rep_out.apply(ids, torch.tensor([action.inverse(g)]))[0])
    return LoopGroup(maps, back)


@torch.no_grad()
def authors_loop_generate(model: torch.nn.Module, group: LoopGroup, context: list[int],
                          max_new_tokens: int, generator: torch.Generator | None,
                          greedy: bool = False) -> list[int]:
    """EquiGPT2 as the authors' decoder runs it: for every new token and every group element
    in turn, the transformed context is rebuilt from a Python list and the whole prefix goes
    through GPT-2 (batch 1, no KV cache); the last position's logits are mapped back by g⁻¹
    and averaged over the group; top-k sampling sorts the logits, takes the softmax, keeps the
    first k and draws with ``torch.multinomial``. No stop token: every side makes exactly
    ``max_new_tokens`` tokens. (Their per-sample model reload is left out.)"""
    tokens, new = list(context), []
    for _ in range(max_new_tokens):
        views = []
        for token_map, back in zip(group.token_maps, group.back_index, strict=True):
            moved = torch.tensor([[token_map.get(t, t) for t in tokens]])
            views.append(model(input_ids=moved).logits[0, -1][back])
        logits = torch.stack(views).mean(dim=0)
        if greedy:
            token = int(logits.argmax())
        else:
            ordered, index = torch.sort(logits, descending=True)
            probs = ordered.softmax(dim=-1)[:TOP_K]
            token = int(index[torch.multinomial(probs, 1, generator=generator)])
        tokens.append(token)
        new.append(token)
    return new


def build(model_name: str, group_name: str, samples: int) -> tuple:
    from equiv.backbones.gpt2 import tiny_gpt2
    from equiv.data.nlg import WORD_SETS, prompts, tiny_vocabulary, token_cycles, vocab_action
    from equiv.experiments.nlg.protocol import encode_left_padded
    from equiv.methods.generation import EquituneLM

    n_layer, n_embd, n_head, vocab = MODELS[model_name]
    items = prompts(DEMOGRAPHICS[group_name], "respect")
    texts = [p.text for p in items]
    words = WORD_SETS[group_name]()
    lm = tiny_gpt2(tiny_vocabulary(texts, words), n_layer=n_layer, n_embd=n_embd,
                   n_head=n_head, n_positions=128, seed=0, vocab_size=vocab)
    group = token_cycles(words, lm.encode_word, lm.tokenizer.unk_token_id)
    action = vocab_action(group, lm.vocab_size, group_name)
    # mean of logits, as the authors: both sides sample from the same distribution
    wrapper = EquituneLM(lm, action, combine="logits").eval()
    ids, mask = encode_left_padded(lm, texts * samples)
    contexts = [lm.encode_word(t) for t in texts]
    return lm, wrapper, action, group, ids, mask, contexts


def best_times(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` timings per side, the sides interleaved so that a burst of load
    from other processes hits all of them."""
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeats):
        for side, fn in sides.items():
            best[side] = min(best[side], timed(fn)[0])
    return best


@torch.no_grad()
def measure(model_name: str, args: argparse.Namespace) -> tuple[list[list[str]], str, str]:
    """Table rows (one per length), a note on the model, and the greedy-equality check."""
    lm, wrapper, action, group, ids, mask, contexts = build(model_name, args.nlg_group,
                                                            args.nlg_samples)
    loop = loop_group(action, group.cycles, lm.vocab_size)
    n_batch = ids.shape[0]
    sample = [contexts[i % len(contexts)] for i in range(args.nlg_loop_sample)]

    def batched(length: int, seed: int = 0) -> object:
        return wrapper.generate(ids, mask, max_new_tokens=length, top_k=TOP_K,
                                generator=torch.Generator().manual_seed(seed), stop_ids=[-1])

    def cache_one(length: int, context: list[int], greedy: bool = False) -> list[int]:
        t = torch.tensor([context])
        out = wrapper.generate(t, torch.ones_like(t), max_new_tokens=length, top_k=TOP_K,
                               generator=torch.Generator().manual_seed(0), greedy=greedy,
                               stop_ids=[-1])
        return out.tokens[0].tolist()

    def authors(length: int, context: list[int], greedy: bool = False) -> list[int]:
        return authors_loop_generate(lm.model, loop, context, length,
                                     torch.Generator().manual_seed(0), greedy=greedy)

    # correctness first: greedy decoding gives the same tokens on both sides
    same = all(authors(15, c, greedy=True) == cache_one(15, c, greedy=True) for c in sample[:2])
    check = f"{model_name}: {'identical' if same else 'DIFFERENT'}"

    rows = []
    for length in lengths_of(args):
        best = best_times({
            "batched": lambda length=length: batched(length),
            "cache1": lambda length=length: [cache_one(length, c) for c in sample],
            "loop": lambda length=length: [authors(length, c) for c in sample]},
            args.nlg_repeats)
        fast_rate = n_batch * length / best["batched"]
        cache1_rate = len(sample) * length / best["cache1"]
        loop_rate = len(sample) * length / best["loop"]
        mem = ["", ""]
        if not args.nlg_no_memory:
            fast_mb = peak_allocated_mb(lambda length=length: batched(length))
            loop_mb = peak_allocated_mb(lambda length=length: authors(length, sample[0]))
            mem = [f"{fast_mb:,.1f}", f"{loop_mb:,.1f}"]
        rows.append([model_name, str(length), f"{loop_rate:,.1f}", f"{cache1_rate:,.1f}",
                     f"{fast_rate:,.0f}", f"{cache1_rate / loop_rate:.1f}×",
                     f"**{fast_rate / loop_rate:.1f}×**", *mem])
    n_layer, n_embd = MODELS[model_name][:2]
    n_params = sum(p.numel() for p in lm.model.parameters())
    note = (f"- `{model_name}`: {n_layer} layers, n_embd {n_embd}, vocabulary "
            f"{lm.vocab_size:,}, {n_params / 1e6:.2f}M parameters (random weights); batched "
            f"side: {n_batch} contexts × |G| = {action.order} views = "
            f"{n_batch * action.order} rows")
    return rows, note, check


def lengths_of(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in args.nlg_lengths.split(",")]


def bench(args: argparse.Namespace) -> Section:
    models = [m.strip() for m in args.nlg_models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"--nlg-models: unknown {sorted(unknown)}; valid: {', '.join(MODELS)}")
    rows, notes, checks = [], [], []
    for model_name in models:
        model_rows, note, check = measure(model_name, args)
        rows += model_rows
        notes.append(note)
        checks.append(check)
    return Section(
        f"NLG: EquiGPT2 generation, batched with the KV cache vs the authors' loop "
        f"(group {args.nlg_group})",
        settings=[
            f"top-k {TOP_K} sampling, exactly N new tokens per context (no stop token), "
            f"equitune as the mean of the views' logits (the authors'); CPU, "
            f"{torch.get_num_threads()} thread(s); tokens/s counts new tokens of the output, "
            f"not of the views; each side timed {args.nlg_repeats}× interleaved with the "
            "others, the fastest counts",
            "loop (the authors' approach, re-implemented): one context at a time; for every new "
            "token, every group element in turn runs GPT-2 on its whole transformed prefix "
            f"without a KV cache; timed on {args.nlg_loop_sample} contexts",
            "cache, batch 1: `SymmetrizedLM.generate` on the same contexts one at a time (the "
            "|G| views of one context batched, KV cache): the cache's share of the gain",
            f"batched (equiv): all {args.nlg_samples} samples × 5 templates × "
            f"{len(DEMOGRAPHICS[args.nlg_group])} demographics in one `generate` call with the "
            "KV cache",
            "peak memory: the largest CPU tensor memory allocated during one generation and "
            "alive at once (torch profiler `profile_memory`, weights excluded); loop: one "
            "context; batched: the whole batch"],
        header=["model", "new tokens", "loop tok/s", "cache, batch 1 tok/s", "batched tok/s",
                "cache ratio", "batched ratio (target ≥ 10× at 15)", "batched peak MiB",
                "loop peak MiB"],
        rows=rows,
        notes=[*notes,
               f"- greedy decoding, loop vs `generate`, 15 tokens on 2 contexts: "
               f"{'; '.join(checks)}"])
