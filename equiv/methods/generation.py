"""Symmetrized text generation with a causal LM over a group permuting vocabulary words.

All ``|G|·B`` views ``g·x`` of a left-padded batch of contexts decode together in one batch,
with the KV cache. At every step, with ``logp_g = log p(· | g·x, g·y_<t)``:

* ``equitune`` (EquiGPT2): ``p_t = (1/|G|) Σ_g g⁻¹·p_g``; ``y_t ~ p_t``; view ``g`` is fed
  ``g·y_t``.
* ``lambda_equitune``: weights ``λ(h_g)`` from each view's last hidden state, normalised over
  the group, instead of ``1/|G|``. Nothing here trains λ; the NLG protocol uses
  ``uniform_lambda_net`` (zero last layer), so there it generates exactly as equitune. λ's
  dropout draws one mask per context, shared by its views, so λ-equitune stays equivariant with
  λ in training mode; GPT-2's own dropout (Hugging Face modules, attention dropout inside the
  fused kernel) is per row, so the LM itself must be in eval mode for that (as it always is
  here: nothing trains it).
* ``equizero``: every view samples on its own; at the end a scorer (higher = better, e.g.
  regard or VADER) scores each view's continuation, and the best one, ``y_{g*}``, is mapped back
  as ``g*⁻¹·y_{g*}``.
* ``vanilla`` is ``equitune`` over the trivial group.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from equiv.backbones.gpt2 import CausalLM
from equiv.groups import GroupAction
from equiv.groups.permutation import LastDimPermutation
from equiv.methods.dropout import warn_per_view_dropout
from equiv.methods.lambda_equitune import LambdaNet, normalize_weights, view_scores

GenMethod = Literal["vanilla", "equitune", "lambda_equitune", "equizero"]
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


class SymmetrizedLM(nn.Module):
    """A causal LM wrapped by a symmetrizer over a vocabulary-permutation group."""

    def __init__(self, lm: CausalLM, action: GroupAction, method: GenMethod,
                 combine: Combine = "prob", relaxed: bool = False,
                 general_ids: Sequence[int] = (), lambda_net: nn.Module | None = None,
                 normalization: Literal["softplus", "softmax"] = "softplus") -> None:
        super().__init__()
        if not isinstance(action.rep_out, LastDimPermutation):
            raise ValueError("generation symmetrizers need a group permuting the vocabulary")
        if method == "lambda_equitune" and lambda_net is None:
            raise ValueError("lambda_equitune needs a lambda_net")
        if combine not in ("prob", "logits"):
            raise ValueError(f"combine must be 'prob' or 'logits', got {combine!r}")
        self.lm, self.action, self.method = lm, action, method
        self.combine, self.relaxed = combine, relaxed
        self.register_buffer("general_ids", torch.tensor(list(general_ids), dtype=torch.long),
                             persistent=False)
        if lambda_net is not None:
            warn_per_view_dropout(lambda_net)
        self.lambda_net = lambda_net
        self.normalization = normalization
        # Only the group words move. Read once off ``act_out_inverse_all`` where view g's
        # logits, mapped back by g⁻¹, take each moved word's column from (``moved_src[g]``), so
        # a step combines the views without gathering all |G|·B×V entries.
        vocab = action.rep_out.table.shape[-1]
        ids = torch.arange(vocab)
        cols = action.act_out_inverse_all(ids.repeat(action.order, 1))
        moved = (cols != ids).any(dim=0).nonzero().squeeze(-1)
        self.register_buffer("moved_ids", moved, persistent=False)
        self.register_buffer("moved_src", cols[:, moved].contiguous(), persistent=False)

    # -- one decoding step -------------------------------------------------------------------
    def _relax(self, logp: Tensor, identity: Tensor) -> Tensor:
        """General words take the identity view's log-probabilities; renormalise."""
        if not self.relaxed or self.general_ids.numel() == 0:
            return logp
        logp = logp.clone()
        logp[:, self.general_ids] = identity[:, self.general_ids]
        return logp.log_softmax(dim=-1)

    def weights(self, hidden: Tensor) -> Tensor:
        """Combination weights ``[|G|, B]`` (uniform for equitune)."""
        order = self.action.order
        if self.method == "lambda_equitune":
            assert self.lambda_net is not None
            scores = view_scores(self.lambda_net, hidden.detach(), order)   # views share masks
            return normalize_weights(scores, self.normalization)
        return torch.full((order, hidden.shape[0] // order), 1.0 / order, device=hidden.device)

    @property
    def mirrored(self) -> bool:
        """Relaxed equizero decodes each view's untransformed text as extra rows."""
        return (self.method == "equizero" and self.relaxed and self.general_ids.numel() > 0
                and self.action.order > 1)

    def combine_views(self, logits: Tensor, hidden: Tensor) -> Tensor:
        """Next-token log-probabilities: ``[B, V]`` combined, or ``[|G|·B, V]`` per view
        (equizero; its mirror rows, if any, are the second half of ``logits``)."""
        logp = logits.float().log_softmax(dim=-1)
        if self.method == "equizero":
            if self.mirrored:
                views, mirrors = logp.chunk(2)
                return self._relax(views, mirrors)
            return logp
        order = self.action.order
        if order == 1:                                   # vanilla: nothing to combine
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

    def _rows(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The group-major views ``g·x`` (then, for relaxed equizero, their mirrors ``x``) and
        the attention mask of every row."""
        rows = self.action.act_in_all(input_ids)
        if self.mirrored:
            rows = torch.cat([rows, input_ids.repeat(self.action.order, 1)])
        return rows, attention_mask.long().repeat(rows.shape[0] // input_ids.shape[0], 1)

    @torch.no_grad()
    def next_token_logprobs(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The symmetrized next-token distribution after a (left-padded) context, recomputed
        from the full prefix: ``[B, V]`` (``[|G|·B, V]`` for equizero)."""
        rows, mask = self._rows(input_ids, attention_mask)
        out = self.lm.step(rows, mask, use_cache=False)
        return self.combine_views(out.logits, out.hidden)

    # -- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, *, max_new_tokens: int = 15,
                 top_k: int = 40, generator: torch.Generator | None = None,
                 greedy: bool = False, stop_ids: Sequence[int] = (),
                 use_cache: bool = True, scorer: ViewScorer | None = None) -> Generation:
        """Continue every context; stop a row at a token in ``stop_ids`` (newline, EOS).

        ``use_cache=False`` recomputes the full prefix at every step (the authors' way; kept
        for benchmarks and tests). Equizero needs ``scorer``.
        """
        order, batch = self.action.order, input_ids.shape[0]
        per_view = self.method == "equizero"
        if per_view and scorer is None:
            raise ValueError("equizero generation needs a scorer")
        rows = order * batch
        elements = self.action.stacked_elements(batch, input_ids.device)
        back = self.action.inverse(elements)
        seq, mask = self._rows(input_ids, attention_mask)
        stops = torch.tensor(list(stop_ids) or [self.lm.eos_id], device=input_ids.device)
        n_out = rows if per_view else batch
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
            if not per_view:                             # view g reads g·y
                feed = self.action.act_in(y.repeat(order), elements)
            elif self.mirrored:                          # its mirror reads g⁻¹·y^g
                feed = torch.cat([y, self.action.act_in(y, back)])
            else:
                feed = y
            fresh = feed.unsqueeze(1)
            if not use_cache:
                seq = torch.cat([seq, fresh], dim=1)
            mask = torch.cat([mask, torch.ones_like(fresh)], dim=1)
            if bool(done.all()):
                break
        tokens = torch.stack(produced, dim=1)
        if not per_view:
            return Generation(tokens, lengths)
        assert scorer is not None
        scores = scorer(tokens, lengths).view(order, batch)
        best = scores.argmax(dim=0)                      # first maximum: ties keep the identity
        picked = tokens.view(order, batch, -1)[best, torch.arange(batch)]
        mapped = self.action.act_in(picked, self.action.inverse(best))
        return Generation(mapped, lengths.view(order, batch)[best, torch.arange(batch)], best,
                          scores)
