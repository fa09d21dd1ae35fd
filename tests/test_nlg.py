"""NLG fairness on a tiny random GPT-2 with a local word-level tokenizer: exact group
transforms of next-token distributions, the relaxed general words, cached batched decoding,
equizero's choice, word checks, and the whole task through the in-process runner."""

import copy
import json

import pytest
import torch

from equiv.backbones.gpt2 import CausalLM, load_gpt2, tiny_gpt2
from equiv.data.nlg import (
    GENERAL_WORDS,
    WORD_SETS,
    VocabGroup,
    prompts,
    tiny_vocabulary,
    token_cycles,
    vocab_action,
)
from equiv.errors import ConfigError, MissingResourceError, MultiTokenWordError
from equiv.experiments.nlg.protocol import encode_left_padded
from equiv.methods import LambdaNet
from equiv.methods.generation import (
    EquituneLM,
    SymmetrizedLM,
    build_lm_wrapper,
    uniform_lambda_net,
)
from equiv.runner import execute
from tests.helpers import compose_config

DEMOGRAPHICS = {"race": ["Black person", "White person"],
                "race3": ["Black person", "White person", "Asian person"],
                "gender": ["man", "woman"]}


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    texts = [p.text for d in DEMOGRAPHICS.values() for p in prompts(d, "respect")]
    words = [c for name in ("race3", "gender") for c in WORD_SETS[name]()]
    return tiny_gpt2(tiny_vocabulary(texts, words), seed=0)


@pytest.fixture(scope="module")
def talkative_lm(lm: CausalLM) -> CausalLM:
    """``lm`` with its race words made likely (about a third of sampled tokens): continuations
    that mention them read differently mapped back by ``g`` or by ``g⁻¹`` under the 3-cycle, so
    the checks below are not vacuous (``lm`` itself samples them about once in fifty)."""
    talk = copy.deepcopy(lm)
    race = token_cycles(WORD_SETS["race3"](), lm.encode_word, lm.tokenizer.unk_token_id)
    head = talk.model.lm_head
    talk.model.lm_head = torch.nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        talk.model.lm_head.weight.copy_(head.weight)
        talk.model.lm_head.bias.zero_()
        talk.model.lm_head.bias[[i for c in race.cycles for i in c]] = 2.0
    return talk


def wrap(lm: CausalLM, word_set: str, method: str = "equitune", relaxed: bool = False,
         lambda_net=None) -> SymmetrizedLM:
    group = token_cycles(WORD_SETS[word_set](), lm.encode_word, lm.tokenizer.unk_token_id)
    if method == "vanilla":
        group = VocabGroup([], [], [], group.general_ids)
    return build_lm_wrapper(lm, vocab_action(group, lm.vocab_size, word_set), method,
                            relaxed=relaxed, general_ids=group.general_ids,
                            lambda_net=lambda_net)


def batch(lm: CausalLM, word_set: str, template: str = "was known for"):
    texts = [f"The {d} {template}" for d in DEMOGRAPHICS[word_set]]
    return encode_left_padded(lm, texts)


@pytest.mark.parametrize("word_set", ["race", "race3", "gender"])
@pytest.mark.parametrize("method", ["equitune", "lambda_equitune"])
def test_next_token_distributions_are_exact_group_transforms(lm, word_set, method):
    torch.manual_seed(1)
    net = LambdaNet(lm.model.config.n_embd, hidden=16, dropout=0.0).eval()   # non-uniform λ
    model = wrap(lm, word_set, method, lambda_net=net)
    ids, mask = batch(lm, word_set)
    act = model.action
    p = model.next_token_logprobs(ids[:1], mask[:1])            # "The man ..." / "The Black ..."
    for g in act.elements:
        moved = act.act_in(ids[:1], g)
        assert torch.equal(moved, ids[g:g + 1])                  # g maps demographic 0 to g
        pg = model.next_token_logprobs(moved, mask[:1])
        torch.testing.assert_close(pg, act.act_out(p, g), atol=1e-5, rtol=0)
        if act.inverse(g) != g:                                  # order 3: g⁻¹ would be wrong
            assert (pg - act.act_out(p, act.inverse(g))).abs().max() > 1e-3


@pytest.mark.parametrize(("word_set", "breaks"), [("race", False), ("race3", True)])
def test_mapping_views_back_by_g_instead_of_its_inverse_breaks_order_3(lm, word_set, breaks):
    """The authors' original EquiGPT2 mapped view ``g`` back by ``g``: harmless for a swap,
    wrong for the 3-cycle. The equivariance check above must catch that mistake."""
    group = token_cycles(WORD_SETS[word_set](), lm.encode_word, lm.tokenizer.unk_token_id)
    act = vocab_action(group, lm.vocab_size, word_set)

    def forward_g(y):                                    # the mistake: g instead of g⁻¹
        return act.rep_out.apply(y, act.stacked_elements(y.shape[0] // act.order, y.device))

    act.act_out_inverse_all = forward_g
    model = EquituneLM(lm, act)
    ids, mask = batch(lm, word_set)
    p = model.next_token_logprobs(ids[:1], mask[:1])
    errors = [(model.next_token_logprobs(act.act_in(ids[:1], g), mask[:1])
               - act.act_out(p, g)).abs().max().item() for g in act.elements]
    assert (max(errors) > 1e-3) == breaks


def test_vanilla_is_not_fair(lm):
    model = wrap(lm, "race", "vanilla")
    ids, mask = batch(lm, "race")
    p = model.next_token_logprobs(ids, mask)
    act = wrap(lm, "race").action
    assert (p[1] - act.act_out(p[:1], 1)[0]).abs().max() > 1e-3


def test_relaxed_general_words_follow_the_identity_view(lm):
    ids, mask = batch(lm, "gender")
    plain = wrap(lm, "gender", "vanilla").next_token_logprobs(ids, mask)
    equi = wrap(lm, "gender").next_token_logprobs(ids, mask)
    relaxed = wrap(lm, "gender", relaxed=True).next_token_logprobs(ids, mask)
    general = torch.tensor([lm.encode_word(w)[0] for w in GENERAL_WORDS])
    other = torch.tensor([i for i in range(lm.vocab_size) if i not in set(general.tolist())])
    # Ratios among general words are the untransformed context's; among the rest, equitune's.
    def ratios(logp, index):
        return logp[:, index] - logp[:, index[:1]]
    torch.testing.assert_close(ratios(relaxed, general), ratios(plain, general), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(ratios(relaxed, other), ratios(equi, other), atol=1e-5, rtol=0)
    assert (ratios(equi, general) - ratios(plain, general)).abs().max() > 1e-3
    # "he" gets the same probability after "The man" and "The woman" only without relaxing.
    he = lm.encode_word(" he")[0]
    assert abs(equi[0, he] - equi[1, he]) < 1e-5
    assert abs(relaxed[0, he] - relaxed[1, he]) > 1e-4


@pytest.mark.parametrize("method", ["equitune", "vanilla"])
def test_cached_batched_decoding_equals_full_prefix_recomputation(lm, method):
    model = wrap(lm, "race3", method)
    texts = [p.text for p in prompts(DEMOGRAPHICS["race3"], "respect")]   # 3 lengths of prompt
    ids, mask = encode_left_padded(lm, texts)
    stops = [lm.eos_id, *lm.encode_word("\n")]
    fast = model.generate(ids, mask, greedy=True, stop_ids=stops)
    for b, text in enumerate(texts):
        one_ids, one_mask = encode_left_padded(lm, [text])
        slow = model.generate(one_ids, one_mask, greedy=True, stop_ids=stops, use_cache=False)
        n = int(slow.lengths[0])
        assert int(fast.lengths[b]) == n
        assert torch.equal(fast.tokens[b, :n], slow.tokens[0, :n])
    # Top-k sampling: same seed, same tokens with and without the cache.
    runs = [model.generate(ids, mask, top_k=40, stop_ids=stops, use_cache=cache,
                           generator=torch.Generator().manual_seed(7)) for cache in (True, False)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)


@pytest.mark.parametrize("method", ["equitune", "lambda_equitune"])
def test_sampled_continuations_are_equivariant_under_the_3_cycle(talkative_lm, method):
    """Top-k sampling from the same random state: the continuations of ``g·x`` are ``g`` applied
    to those of ``x``, token by token (a view fed ``g⁻¹·y`` instead of ``g·y`` breaks this)."""
    lm = talkative_lm
    torch.manual_seed(1)
    net = LambdaNet(lm.model.config.n_embd, hidden=16, dropout=0.0).eval()   # non-uniform λ
    model = wrap(lm, "race3", method, lambda_net=net)
    act = model.action
    ids, mask = batch(lm, "race3")

    def continue_(x):
        return model.generate(x, mask, stop_ids=[-1], generator=torch.Generator().manual_seed(0))

    out = continue_(ids).tokens
    assert (act.act_in(out, 1) != out).float().mean() > 0.2      # group words are sampled
    for g in act.elements:
        assert torch.equal(continue_(act.act_in(ids, g)).tokens, act.act_in(out, g))


def test_relaxed_equizero_general_words_come_from_each_views_own_text(talkative_lm):
    """R-EquizeroGPT2: view ``g`` (text ``(g·x, y^g)``) takes he/she/his/her/him from the
    plain model on its untransformed text ``(x, g⁻¹·y^g)``, at every step, with the cache."""
    lm = talkative_lm
    model = wrap(lm, "race3", "equizero", relaxed=True)
    plain = wrap(lm, "race3", "vanilla")
    act, general = model.action, model.general_ids
    ids, mask = batch(lm, "race3")                       # three prompts of one length
    recorded, captured = [], {}
    combine = model.combine_views

    def spy(logits, hidden):
        recorded.append(combine(logits, hidden))
        return recorded[-1]

    def scorer(tokens, lengths):
        captured["tokens"] = tokens
        return torch.zeros(tokens.shape[0])

    model.combine_views = spy
    model.generate(ids, mask, max_new_tokens=5, generator=torch.Generator().manual_seed(3),
                   stop_ids=[-1], scorer=scorer)
    tokens, elements = captured["tokens"], act.stacked_elements(3, ids.device)
    assert (act.act_in(tokens, 1) != tokens).float().mean() > 0.2  # the views say group words
    views = act.act_in_all(ids)
    diverged = 0.0
    for t, logp in enumerate(recorded):
        view_text = torch.cat([views, tokens[:, :t]], dim=1)
        own = act.act_in(view_text, act.inverse(elements))          # (x, g⁻¹·y^g_<t)
        ones = torch.ones_like(view_text)
        p_view = plain.next_token_logprobs(view_text, ones)
        p_own = plain.next_token_logprobs(own, ones)
        expected = p_view.clone()
        expected[:, general] = p_own[:, general]
        torch.testing.assert_close(logp, expected.log_softmax(-1), atol=1e-5, rtol=0)
        identity_view = p_view[:3].repeat(3, 1)                      # (x, y^e_<t): another text
        diverged = max(diverged, (identity_view[:, general] - p_own[:, general]).abs().max())
    assert diverged > 1e-3


def test_untrained_lambda_equitune_generates_exactly_as_equitune(lm):
    """The NLG protocol's λ-network is untrained with a zero last layer: uniform λ."""
    net = uniform_lambda_net(lm.model.config.n_embd).eval()
    ids, mask = batch(lm, "race3")
    runs = [wrap(lm, "race3", m, lambda_net=net).generate(
        ids, mask, generator=torch.Generator().manual_seed(5), stop_ids=[-1])
        for m in ("equitune", "lambda_equitune")]
    assert torch.equal(runs[0].tokens, runs[1].tokens)


def test_equizero_picks_by_its_proxy_and_maps_back_by_the_inverse(talkative_lm):
    lm = talkative_lm
    model = wrap(lm, "race3", "equizero")
    ids, mask = batch(lm, "race3")
    views = {}
    target = torch.tensor([1, 2, 0])                       # the best element per example

    def scorer(tokens, lengths):
        views["tokens"] = tokens
        g = torch.arange(3).repeat_interleave(3)
        return (g == target.repeat(3)).float() + 0.01 * torch.arange(9.0)

    out = model.generate(ids, mask, max_new_tokens=6, generator=torch.Generator().manual_seed(0),
                         scorer=scorer)
    assert out.chosen.tolist() == target.tolist()
    per_view = views["tokens"].view(3, 3, -1)
    act = model.action
    assert not torch.equal(act.act_in(per_view[1, :1], 1), act.act_in(per_view[1, :1], 2))
    for b, g in enumerate(target.tolist()):
        expected = act.act_in(per_view[g, b:b + 1], act.inverse(g))
        assert torch.equal(out.tokens[b:b + 1], expected)
    # Mapping back matters: a continuation mentioning " White" in view g=1 reads " Black".
    black, white = lm.encode_word(" Black")[0], lm.encode_word(" White")[0]
    assert act.act_in(torch.tensor([[white]]), act.inverse(1)).item() == black


def test_each_generic_method_class_has_its_generation_variant(lm):
    from equiv.methods import Equitune, Equizero, LambdaEquitune, Vanilla
    from equiv.methods.generation import EquizeroLM, LambdaEquituneLM, VanillaLM, lm_variant

    variants = [VanillaLM, EquituneLM, LambdaEquituneLM, EquizeroLM]
    assert [lm_variant(c) for c in (Vanilla, Equitune, LambdaEquitune, Equizero)] == variants
    assert [lm_variant(v.name) for v in variants] == variants
    with pytest.raises(ValueError, match=r"'Linear'; supported: Vanilla, Equitune, "
                                         r"LambdaEquitune, Equizero$"):
        lm_variant(torch.nn.Linear)
    with pytest.raises(ValueError, match="lambda_equitune needs a lambda_net"):
        wrap(lm, "race", "lambda_equitune")
    with pytest.raises(ValueError, match="equizero generation needs a scorer"):
        wrap(lm, "race", "equizero").generate(*batch(lm, "race"))


def test_words_that_are_not_one_token_are_rejected(lm):
    words = [[" Black", " White"], [" Native American", " Pacific Islander"]]
    with pytest.raises(MultiTokenWordError, match=r"' Native American'.*' Pacific Islander'"):
        token_cycles(words, lm.encode_word, lm.tokenizer.unk_token_id)
    with pytest.raises(MultiTokenWordError, match="' Martian'"):        # unknown -> <unk>
        token_cycles([[" Black", " Martian"]], lm.encode_word, lm.tokenizer.unk_token_id)
    kept = token_cycles(words, lm.encode_word, lm.tokenizer.unk_token_id, on_multi_token="drop")
    assert kept.words == [[" Black", " White"]] and len(kept.dropped) == 1


def test_missing_gpt2_weights_offline(tmp_path):
    fetch = r"scripts/prefetch\.py task=nlg_gender_respect"
    with pytest.raises(MissingResourceError, match=fetch):
        load_gpt2("gpt2", tmp_path, offline=True)


def test_incompatible_group_is_a_config_error(tmp_path):
    cfg = compose_config("task=nlg_race_respect", "group=word_swap_gender", tmp=tmp_path)
    with pytest.raises(ConfigError, match="word_swap_race"):
        execute(cfg, tmp_path / "run")


@pytest.mark.parametrize(("task", "method", "extra"), [
    ("nlg_race_respect", "equitune", []),
    ("nlg_race_respect", "lambda_equitune", ["group=word_swap_race3"]),
    ("nlg_gender_occupation", "equizero", ["task.relaxed=true"]),
])
def test_task_end_to_end_offline_with_vader(task, method, extra, tmp_path):
    cfg = compose_config(f"task={task}", "backbone=tiny_gpt2", f"method={method}",
                         "task.scorer=vader", "task.equizero_proxy=vader",
                         "task.samples_per_prompt=2", *extra, tmp=tmp_path)
    report = execute(cfg, tmp_path / "run")
    res = json.loads(report.results_path.read_text())
    assert res["pretrained"] is False and res["task"] == task
    demos = res["config"]["group"]["demographics"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text()
            .splitlines()]
    assert len(rows) == len(demos) * 5 * 2 == res["n_samples"]
    assert {r["demographic"] for r in rows} == set(demos)
    assert all(r["text"].startswith(r["prompt"]) and r["label"] in
               ("negative", "neutral", "positive", "other") for r in rows)
    m = res["metrics"]
    assert 0.0 <= m["fairness_gap"] <= 1.0 and -1.0 <= m["quality_mean"] <= 1.0
    for d in demos:
        key = d.replace(" ", "_")
        assert sum(m[f"{lab}_share.{key}"] for lab in
                   ("negative", "neutral", "positive", "other")) == pytest.approx(1.0)
    if method == "equizero":
        assert res["model_variant"] == "R-EquizeroGPT2"
        assert all(r["score"] == pytest.approx(max(r["view_scores"]), abs=1e-4) for r in rows)


def test_task_is_reproducible_and_writes_samples_atomically_beside_results(tmp_path):
    def run(seed: int, name: str) -> tuple[str, set[str]]:
        cfg = compose_config("task=nlg_sexuality_respect", "backbone=tiny_gpt2",
                             "method=equitune", "task.scorer=vader",
                             "task.samples_per_prompt=2", f"seed={seed}", tmp=tmp_path)
        report = execute(cfg, tmp_path / name)
        files = {p.name for p in report.results_path.parent.iterdir()}
        return (report.results_path.parent / "samples.jsonl").read_text(), files

    first, files = run(0, "a")
    assert {"results.json", "samples.jsonl"} <= files
    assert not [f for f in files if f.endswith(".tmp")]             # no temporary left behind
    assert run(0, "b")[0] == first                                  # same seed, same samples
    assert run(1, "c")[0] != first


def test_benchmark_loop_is_the_same_model_as_the_batched_generator():
    """The benchmark's re-implementation of the authors' loop (batch 1, full prefix, one group
    element at a time) decodes greedily exactly as ``SymmetrizedLM.generate``, also for the
    3-cycle, and a tiny run of the benchmark reports a ratio for each length."""
    import argparse

    from scripts.benchmarks import nlg as bench_nlg

    lm, wrapper, action, group, _, _, contexts = bench_nlg.build("tiny", "race3", 1)
    loop = bench_nlg.loop_group(action, group.cycles, lm.vocab_size)
    for context in contexts[:3]:
        t = torch.tensor([context])
        ours = wrapper.generate(t, torch.ones_like(t), max_new_tokens=8, greedy=True,
                                stop_ids=[-1]).tokens[0].tolist()
        assert bench_nlg.authors_loop_generate(lm.model, loop, context, 8, None,
                                               greedy=True) == ours
    parser = argparse.ArgumentParser()
    bench_nlg.add_arguments(parser)
    args = parser.parse_args(["--nlg-models", "tiny", "--nlg-lengths", "3,4", "--nlg-samples",
                              "1", "--nlg-loop-sample", "1", "--nlg-repeats", "1",
                              "--nlg-no-memory"])
    section = bench_nlg.bench(args)
    assert [row[1] for row in section.rows] == ["3", "4"]
    assert "tiny: identical" in section.markdown()
