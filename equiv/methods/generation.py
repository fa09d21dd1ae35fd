"""Symmetrized text generation with a causal LM over a group permuting vocabulary words.

All ``|G|·B`` views ``g·x`` of a left-padded batch of contexts decode together in one batch,
with the KV cache. One class per method: :class:`VanillaLM` (the LM as it is),
:class:`EquituneLM` (EquiGPT2), :class:`LambdaEquituneLM`, :class:`EquizeroLM`.

``relaxed`` (R-EquiGPT2, R-EquizeroGPT2) gives the "general" words (he, she, his, her, him)
the probability of the untransformed text instead of the group combination, then renormalises.
For equitune that text is the identity view ``(x, y_<t)`` (as the authors' R-EquiGPT2). For
equizero each view ``g`` has its own continuation, so its untransformed text is
``g⁻¹·(g·x, y^g_<t) = (x, g⁻¹·y^g_<t)``: these "mirror" rows decode alongside the views in the
same batch (our reading: the authors published no equizero code).

``combine='prob'`` averages probabilities (a mixture); ``'logits'`` averages log-probabilities
(the authors average logits; per-view softmax offsets cancel after renormalisation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from equiv.backbones.gpt2 import CausalLM
from equiv.groups import GroupAction
from equiv.groups.permutation import LastDimPermutation
from equiv.methods.base import Equitune, Symmetrizer, Vanilla, build_variant, method_variant
from equiv.methods.dropout import warn_per_view_dropout
from equiv.methods.equizero import Equizero
from equiv.methods.lambda_equitune import (
    LambdaEquitune,
    LambdaNet,
    normalize_weights,
    view_scores,
)

Combine = Literal["prob", "logits"]
# tokens [N, T] of each view's continuation, their lengths [N] -> score [N], higher is better
ViewScorer = Callable[[Tensor, Tensor], Tensor]


def uniform_lambda_net(in_features: int, hidden: int = 100, dropout: float = 0.5) -> LambdaNet:
    """The paper's λ-network with its last layer zeroed: λ is uniform (equitune) until trained."""
    net = LambdaNet(in_features, hidden=hidden, dropout=dropout)
    last = net.net[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


@dataclass
class Generation:
    tokens: Tensor                # [B, T] new tokens; after the stop token: the EOS id
    lengths: Tensor               # [B] new tokens before the stop token (the text's length)
    chosen: Tensor | None = None  # equizero: g* per example
    scores: Tensor | None = None  # equizero: [|G|, B] view scores


def top_k_sample(logp: Tensor, k: int, generator: torch.Generator | None,
                 greedy: bool = False) -> Tensor:
    """One token per row from the ``k`` most likely (renormalised); argmax when ``greedy``."""
    if greedy:
        return logp.argmax(dim=-1)
    values, index = logp.topk(min(k, logp.shape[-1]), dim=-1)
    pick = torch.multinomial(values.softmax(dim=-1), 1, generator=generator)
    return index.gather(-1, pick).squeeze(-1)


class SymmetrizedLM(nn.Module, ABC):
    """A causal LM wrapped by a symmetrizer over a vocabulary-permutation group.

    One decoding loop (:meth:`generate`) for every method, in
    :class:`~equiv.methods.base.Symmetrizer`'s terms: :meth:`views` are the rows decoded
    (``g·x``), :meth:`combine_views` maps their next-token log-probabilities back by ``g⁻¹`` and
    combines them, :meth:`feed` is what each row reads next, :meth:`finish` turns the sampled
    tokens into the continuations.
    """

    name: ClassVar[str]                       # the method's config name

    def __init__(self, lm: CausalLM, action: GroupAction, relaxed: bool = False,
                 general_ids: Sequence[int] = ()) -> None:
        super().__init__()
        if not isinstance(action.rep_out, LastDimPermutation):
            raise ValueError("generation symmetrizers need a group permuting the vocabulary")
        self.lm, self.action, self.relaxed = lm, action, relaxed
        self.register_buffer("general_ids", torch.tensor(list(general_ids), dtype=torch.long),
                             persistent=False)

    def _relax(self, logp: Tensor, identity: Tensor) -> Tensor:
        """General words take the untransformed text's log-probabilities; renormalise."""
        if not self.relaxed or self.general_ids.numel() == 0:
            return logp
        logp = logp.clone()
        logp[:, self.general_ids] = identity[:, self.general_ids]
        return logp.log_softmax(dim=-1)

    def views(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The rows to decode, group-major views ``g·x``, and the attention mask of each."""
        rows = self.action.act_in_all(input_ids)
        return rows, attention_mask.long().repeat(rows.shape[0] // input_ids.shape[0], 1)

    def sequences(self, batch: int) -> int:
        """How many sequences are sampled for ``batch`` contexts: one each."""
        return batch

    @abstractmethod
    def combine_views(self, logits: Tensor, hidden: Tensor) -> Tensor:
        """Next-token log-probabilities to sample from, one row per sampled sequence."""

    def feed(self, y: Tensor) -> Tensor:
        """The next input of every row from the sampled tokens ``y [B]``: view ``g`` reads
        ``g·y``."""
        order = self.action.order
        return self.action.act_in(y.repeat(order), self.action.stacked_elements(len(y), y.device))

    def finish(self, tokens: Tensor, lengths: Tensor, scorer: ViewScorer | None) -> Generation:
        """The continuations from the sampled ``tokens [N, T]`` and their ``lengths [N]``."""
        return Generation(tokens, lengths)

    @torch.no_grad()
    def next_token_logprobs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The symmetrized next-token distribution after a (left-padded) context, recomputed
        from the full prefix: ``[B, V]`` (``[|G|·B, V]`` for equizero)."""
        rows, mask = self.views(input_ids, attention_mask)
        out = self.lm.step(rows, mask, use_cache=False)
        return self.combine_views(out.logits, out.hidden)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, *, max_new_tokens: int = 15,
                 top_k: int = 40, generator: torch.Generator | None = None,
                 greedy: bool = False, stop_ids: Sequence[int] = (),
                 use_cache: bool = True, scorer: ViewScorer | None = None) -> Generation:
        """Continue every context; stop a row at a token in ``stop_ids`` (newline, EOS).

        ``use_cache=False`` recomputes the full prefix at every step (the authors' way; kept
        for benchmarks and tests). Equizero needs ``scorer``.
        """
        seq, mask = self.views(input_ids, attention_mask)
        stops = torch.tensor(list(stop_ids) or [self.lm.eos_id], device=input_ids.device)
        n_out = self.sequences(input_ids.shape[0])
        done = torch.zeros(n_out, dtype=torch.bool, device=input_ids.device)
        lengths = torch.zeros(n_out, dtype=torch.long, device=input_ids.device)
        produced: list[Tensor] = []
        past, fresh = None, seq
        for _ in range(max_new_tokens):
            out = self.lm.step(fresh if use_cache else seq, mask, past, use_cache=use_cache)
            past = out.past if use_cache else None
            y = top_k_sample(self.combine_views(out.logits, out.hidden), top_k, generator, greedy)
            y = torch.where(done, self.lm.eos_id, y)
            lengths += (~done & ~torch.isin(y, stops)).long()
            done |= torch.isin(y, stops)
            produced.append(y)
            fresh = self.feed(y).unsqueeze(1)
            if not use_cache:
                seq = torch.cat([seq, fresh], dim=1)
            mask = torch.cat([mask, torch.ones_like(fresh)], dim=1)
            if bool(done.all()):
                break
        return self.finish(torch.stack(produced, dim=1), lengths, scorer)


class VanillaLM(SymmetrizedLM):
    """The LM as it is: its own text, its own next-token distribution."""

    name = "vanilla"

    def __init__(self, lm: CausalLM, action: GroupAction) -> None:
        super().__init__(lm, action)

    def views(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        return input_ids, attention_mask.long()

    def combine_views(self, logits: Tensor, hidden: Tensor) -> Tensor:
        return logits.float().log_softmax(dim=-1)

    def feed(self, y: Tensor) -> Tensor:
        return y


class EquituneLM(SymmetrizedLM):
    """EquiGPT2: with ``logp_g = log p(· | g·x, g·y_<t)``, ``p_t = (1/|G|) Σ_g g⁻¹·p_g``;
    ``y_t ~ p_t``; view ``g`` is fed ``g·y_t``."""

    name = "equitune"

    def __init__(self, lm: CausalLM, action: GroupAction, combine: Combine = "prob",
                 relaxed: bool = False, general_ids: Sequence[int] = ()) -> None:
        super().__init__(lm, action, relaxed, general_ids)
        if combine not in ("prob", "logits"):
            raise ValueError(f"combine must be 'prob' or 'logits', got {combine!r}")
        self.combine = combine
        # Only the group words move. Read once off ``act_out_inverse_all`` where view g's
        # logits, mapped back by g⁻¹, take each moved word's column from (``moved_src[g]``), so
        # a step combines the views without gathering all |G|·B×V entries.
        vocab = action.rep_out.table.shape[-1]
        ids = torch.arange(vocab)
        cols = action.act_out_inverse_all(ids.repeat(action.order, 1))
        moved = (cols != ids).any(dim=0).nonzero().squeeze(-1)
        self.register_buffer("moved_ids", moved, persistent=False)
        self.register_buffer("moved_src", cols[:, moved].contiguous(), persistent=False)

    def weights(self, hidden: Tensor) -> Tensor:
        """Combination weights ``[|G|, B]``: uniform."""
        order = self.action.order
        return torch.full((order, hidden.shape[0] // order), 1.0 / order, device=hidden.device)

    def combine_views(self, logits: Tensor, hidden: Tensor) -> Tensor:
        """Next-token log-probabilities ``[B, V]`` of the combined distribution."""
        logp = logits.float().log_softmax(dim=-1)
        order = self.action.order
        if order == 1:                                   # a trivial group: nothing to combine
            return logp
        batch = logp.shape[0] // order
        views = logp.view(order, batch, -1)              # group-major: g = 0 comes first
        identity = views[0]
        w = self.weights(hidden).unsqueeze(-1)           # [|G|, B, 1]
        # g⁻¹ fixes every column but the group words': combine the views column by column,
        # then redo the moved columns from where g⁻¹ takes them.
        moved = views.gather(-1, self.moved_src.unsqueeze(1).expand(order, batch, -1))
        if self.combine == "prob":
            combined = (views + w.log()).logsumexp(dim=0)
            combined[:, self.moved_ids] = (moved + w.log()).logsumexp(dim=0)
        else:
            combined = (w * views).sum(dim=0)
            combined[:, self.moved_ids] = (w * moved).sum(dim=0)
            combined = combined.log_softmax(dim=-1)
        return self._relax(combined, identity)


class LambdaEquituneLM(EquituneLM):
    """Equitune with weights ``λ(h_g)`` from each view's last hidden state, normalised over the
    group, instead of ``1/|G|``.

    Nothing here trains λ; the NLG protocol uses ``uniform_lambda_net`` (zero last layer), so
    there it generates exactly as equitune. λ's dropout draws one mask per context, shared by its
    views, so λ-equitune stays equivariant with λ in training mode; GPT-2's own dropout (Hugging
    Face modules, attention dropout inside the fused kernel) is per row, so the LM itself must be
    in eval mode for that (as it always is here: nothing trains it).
    """

    name = "lambda_equitune"

    def __init__(self, lm: CausalLM, action: GroupAction, lambda_net: nn.Module | None,
                 combine: Combine = "prob", relaxed: bool = False,
                 general_ids: Sequence[int] = (),
                 normalization: Literal["softplus", "softmax"] = "softplus") -> None:
        super().__init__(lm, action, combine, relaxed, general_ids)
        if lambda_net is None:
            raise ValueError("lambda_equitune needs a lambda_net")
        warn_per_view_dropout(lambda_net)
        self.lambda_net, self.normalization = lambda_net, normalization

    def weights(self, hidden: Tensor) -> Tensor:
        scores = view_scores(self.lambda_net, hidden.detach(), self.action.order)
        return normalize_weights(scores, self.normalization)


class EquizeroLM(SymmetrizedLM):
    """Every view samples on its own; at the end a scorer (higher = better, e.g. regard or
    VADER) scores each view's continuation, and the best one, ``y_{g*}``, is mapped back as
    ``g*⁻¹·y_{g*}``."""

    name = "equizero"

    @property
    def mirrored(self) -> bool:
        """Relaxed equizero decodes each view's untransformed text as extra rows."""
        return self.relaxed and self.general_ids.numel() > 0 and self.action.order > 1

    def views(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The views ``g·x``, then, for relaxed equizero, their mirrors ``x``."""
        rows = self.action.act_in_all(input_ids)
        if self.mirrored:
            rows = torch.cat([rows, input_ids.repeat(self.action.order, 1)])
        return rows, attention_mask.long().repeat(rows.shape[0] // input_ids.shape[0], 1)

    def sequences(self, batch: int) -> int:
        return self.action.order * batch

    def combine_views(self, logits: Tensor, hidden: Tensor) -> Tensor:
        """Per-view log-probabilities ``[|G|·B, V]`` (the mirror rows, if any, are the second
        half of ``logits`` and relax the views')."""
        logp = logits.float().log_softmax(dim=-1)
        if self.mirrored:
            views, mirrors = logp.chunk(2)
            return self._relax(views, mirrors)
        return logp

    def feed(self, y: Tensor) -> Tensor:
        """Each view reads its own token; its mirror reads ``g⁻¹·y^g``."""
        if not self.mirrored:
            return y
        elements = self.action.stacked_elements(len(y) // self.action.order, y.device)
        return torch.cat([y, self.action.act_in(y, self.action.inverse(elements))])

    def finish(self, tokens: Tensor, lengths: Tensor, scorer: ViewScorer | None) -> Generation:
        assert scorer is not None
        order = self.action.order
        batch = tokens.shape[0] // order
        scores = scorer(tokens, lengths).view(order, batch)
        best = scores.argmax(dim=0)                      # first maximum: ties keep the identity
        picked = tokens.view(order, batch, -1)[best, torch.arange(batch)]
        mapped = self.action.act_in(picked, self.action.inverse(best))
        return Generation(mapped, lengths.view(order, batch)[best, torch.arange(batch)], best,
                          scores)

    def generate(self, input_ids: Tensor, attention_mask: Tensor, *,
                 scorer: ViewScorer | None = None, **options: Any) -> Generation:
        if scorer is None:
            raise ValueError("equizero generation needs a scorer")
        return super().generate(input_ids, attention_mask, scorer=scorer, **options)


LM_VARIANTS: dict[type[Symmetrizer], type[SymmetrizedLM]] = {
    Vanilla: VanillaLM, Equitune: EquituneLM, LambdaEquitune: LambdaEquituneLM,
    Equizero: EquizeroLM,
}


def lm_variant(method: str | type) -> type[SymmetrizedLM]:
    """The generation wrapper class of a generic method class (or of its config name)."""
    return method_variant(LM_VARIANTS, method, "generation")


def build_lm_wrapper(lm: CausalLM, action: GroupAction, method: str | type,
                     **options: Any) -> SymmetrizedLM:
    """Wrap ``lm`` with ``method``'s variant, given the options it takes of ``options``."""
    return build_variant(LM_VARIANTS, method, "generation", lm, action, **options)
