"""Symmetrized autoregressive decoding: all ``|G|·B`` views of a batch decode in one batch.

For a seq2seq model ``M`` and a group acting on command tokens (input) and on output tokens,
one class per method: :class:`VanillaSeq2Seq`, :class:`EquituneSeq2Seq`,
:class:`LambdaEquituneSeq2Seq`, :class:`EquizeroSeq2Seq`, :class:`CanonicalizeSeq2Seq` (which
decodes one view per command, ``B`` rows).

Greedy decoding is exactly equivariant (every method but vanilla): the output for ``g·x`` is
``g`` applied to the output for ``x``, token by token (equizero: when the proxy values are
distinct).
In training mode too: the backbone's and λ's dropout (:class:`GroupDropout`) share one mask per
example across its views, so with the same random state the loss of ``g·x, g·y`` is that of
``x, y``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import wraps
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equiv.backbones.seq2seq import DecoderState, Seq2Seq
from equiv.data.vocab import EOS, PAD, SOS
from equiv.groups import GroupAction
from equiv.groups.permutation import LastDimPermutation, TokenPermutation
from equiv.method_options import SEQUENCE_PROXIES
from equiv.methods.base import Equitune, Symmetrizer, Vanilla, build_variant, method_variant
from equiv.methods.canonicalize import Canonicalize, check_canonicalizer
from equiv.methods.dropout import shared_masks, warn_per_view_dropout
from equiv.methods.equizero import Equizero
from equiv.methods.lambda_equitune import LambdaEquitune, normalize_weights, view_scores

Combine = Literal["prob", "logprob"]
SequenceProxy = Literal["mean_max_prob", "entropy", "mean_max_prob_padded"]
_F = TypeVar("_F", bound=Callable[..., Any])


def _shared_views(method: _F) -> _F:
    """Run ``method`` with the backbone's dropout masks shared by each example's views."""
    @wraps(method)
    def wrapped(self: SymmetrizedSeq2Seq, *args: Any, **kwargs: Any) -> Any:
        with shared_masks(self.model, self.order):
            return method(self, *args, **kwargs)
    return wrapped  # type: ignore[return-value]


def _step_loss(logits: Tensor, proxy: SequenceProxy) -> Tensor:
    """The proxy's loss at one decoding step, ``[..., V] -> [...]`` (smaller = more confident)."""
    # Written out rather than through log_softmax, which is ~4x slower for SCAN's 9 actions.
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    total = shifted.exp().sum(dim=-1)
    if proxy in ("mean_max_prob", "mean_max_prob_padded"):
        return -total.reciprocal()                 # the largest probability is exp(0) / total
    if proxy == "entropy":
        logp = shifted - total.log().unsqueeze(-1)
        return -(logp.exp() * logp).sum(dim=-1)
    raise ValueError(f"unknown sequence proxy {proxy!r}; valid: {', '.join(SEQUENCE_PROXIES)}")


def _reduce_proxy(sums: Tensor, counts: Tensor, proxy: SequenceProxy, max_len: int,
                  vocab: int) -> Tensor:
    """Loss per sequence from its summed step losses over ``counts`` real positions.

    ``mean_max_prob_padded`` is the authors' ``top1``: the mean over a fixed ``max_len``-position
    buffer in which every position after EOS scores a max-probability of ``1/V`` (the softmax of
    their all-zero rows), which favours longer outputs. For ``paper_code_compat`` only.
    """
    if proxy == "mean_max_prob_padded":
        return (sums - (max_len - counts) / vocab) / max_len
    return sums / counts


def _sequence_proxy(logits: Tensor, tokens: Tensor, proxy: SequenceProxy,
                    max_len: int = 50) -> Tensor:
    """Loss per decoded sequence from its logits ``[B, L, V]``, over positions up to its EOS."""
    per_step = _step_loss(logits, proxy)
    real = torch.ones_like(tokens, dtype=torch.bool)
    real[:, 1:] = (tokens[:, :-1] != EOS) & (tokens[:, :-1] != PAD)   # through the first EOS
    return _reduce_proxy((per_step * real).sum(dim=1), real.sum(dim=1), proxy, max_len,
                         logits.shape[-1])


class SymmetrizedSeq2Seq(nn.Module, ABC):
    """A seq2seq model wrapped by a symmetrizer over a token-permutation group.

    The shared steps, in :class:`~equiv.methods.base.Symmetrizer`'s terms: :meth:`views` encodes
    the transformed commands ``g·x``, :meth:`align` maps each view's next-token log-probabilities
    back by ``g⁻¹``, :meth:`weights` is each view's share of the combination. A subclass per
    method says what its finetuning :meth:`loss` and its :meth:`decode` make of them.
    """

    name: ClassVar[str]                       # the method's config name

    def __init__(self, model: Seq2Seq, action: GroupAction, combine: Combine = "prob") -> None:
        super().__init__()
        if not isinstance(action.rep_out, LastDimPermutation):
            raise ValueError("sequence symmetrizers need a group permuting output tokens")
        if combine not in ("prob", "logprob"):
            raise ValueError(f"combine must be 'prob' or 'logprob', got {combine!r}")
        self.model, self.action, self.combine = model, action, combine
        self.lambda_net: nn.Module | None = None
        self.out_tokens = TokenPermutation(action.rep_out.table)

    @property
    def order(self) -> int:
        """Views per command."""
        return self.action.order

    def views(self, src: Tensor) -> tuple[Tensor, DecoderState, Tensor]:
        """Transformed commands, their encoding, and the element of each row (group-major)."""
        gx = self.action.act_in_all(src)
        return gx, self.model.encode(gx), self.action.stacked_elements(src.shape[0], src.device)

    def weights(self, state: DecoderState, batch: int) -> Tensor:
        """Combination weights ``[|G|, B]`` of the views: uniform."""
        return torch.full((self.order, batch), 1.0 / self.order, device=state.h.device)

    def align(self, logits: Tensor, g: Tensor) -> Tensor:
        """Each view's next-token log-probabilities mapped back by ``g⁻¹``: ``[|G|, B, V]``."""
        aligned = self.action.rep_out.apply(logits.log_softmax(-1), self.action.inverse(g))
        return aligned.view(self.order, -1, aligned.shape[-1])

    def combine_step(self, aligned: Tensor, weights: Tensor) -> Tensor:
        """Log-probabilities ``[B, V]`` of the combined next-token distribution."""
        w = weights.unsqueeze(-1)
        if self.combine == "prob":
            return (aligned + w.log()).logsumexp(dim=0)
        return (w * aligned).sum(dim=0).log_softmax(dim=-1)

    @_shared_views
    def step_logprobs(self, src: Tensor, prev_tokens: Tensor | None = None, max_len: int = 50,
                      teacher_forcing: float = 1.0,
                      generator: torch.Generator | None = None,
                      per_view: bool = False, feed: Literal["combined", "own"] = "combined",
                      ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Combined decoding: ``(tokens [B, L], log-probs [B, L, V])``.

        With ``prev_tokens`` (gold outputs ending in EOS, PAD-padded) each step is fed the gold
        previous token with probability ``teacher_forcing`` (one draw per sequence, shared by
        the views), else a predicted token: ``feed='combined'`` feeds every view ``g·`` the
        combined argmax (how equitune decodes), ``feed='own'`` each view its own argmax (how
        equizero's views decode). Predictions are fed as they are, also after a predicted EOS,
        as in :meth:`Seq2Seq.train_step_loss`. Without ``prev_tokens`` decoding is greedy and
        stops at EOS. ``per_view`` also returns every view's aligned log-probabilities
        ``[|G|, B, L, V]``.
        """
        batch = src.shape[0]
        _, state, g = self.views(src)
        weights = self.weights(state, batch)
        if feed not in ("combined", "own"):
            raise ValueError(f"feed must be 'combined' or 'own', got {feed!r}")
        view_prev = torch.full((self.order * batch,), SOS, dtype=torch.long, device=src.device)
        steps = prev_tokens.shape[1] if prev_tokens is not None else max_len
        forced = None
        if prev_tokens is not None:
            draw = torch.rand(batch, generator=generator).to(src.device)
            forced = (draw < teacher_forcing).repeat(self.order)
        tokens, logps, views = [], [], []
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        step, step_state = self.model.stepper(state)
        for t in range(steps):
            logits, step_state = step(step_state, view_prev)
            aligned = self.align(logits, g)
            logp = self.combine_step(aligned, weights)
            if per_view:
                views.append(aligned)
            choice = logp.argmax(dim=-1)
            tokens.append(choice.masked_fill(done, PAD))
            logps.append(logp)
            done = done | (choice == EOS)
            if prev_tokens is None and bool(done.all()):
                break
            if feed == "own":
                view_prev = logits.detach().argmax(dim=-1)
            else:
                view_prev = self.out_tokens.apply(choice.detach().repeat(self.order), g)
            if forced is not None:
                gold = self.out_tokens.apply(prev_tokens[:, t].repeat(self.order), g)
                view_prev = torch.where(forced, gold, view_prev)
        if per_view:
            return torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(views, 2)
        return torch.stack(tokens, 1), torch.stack(logps, 1)

    @abstractmethod
    def loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
             generator: torch.Generator | None = None, max_len: int = 50) -> Tensor:
        """Finetuning loss: mean negative log-likelihood per real target token."""

    @abstractmethod
    def decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        """Greedy decoding ``[B, L]`` (tokens after EOS are PAD), without gradient."""


class VanillaSeq2Seq(SymmetrizedSeq2Seq):
    """The pretrained model as it is (one view, the identity); ``action`` is kept for probes."""

    name = "vanilla"

    def __init__(self, model: Seq2Seq, action: GroupAction) -> None:
        super().__init__(model, action)

    @property
    def order(self) -> int:
        return 1

    def views(self, src: Tensor) -> tuple[Tensor, DecoderState, Tensor]:
        g = torch.zeros(src.shape[0], dtype=torch.long, device=src.device)
        return src, self.model.encode(src), g

    def loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
             generator: torch.Generator | None = None, max_len: int = 50) -> Tensor:
        return self.model.train_step_loss(src, tgt, teacher_forcing, generator)

    @torch.no_grad()
    def decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        return self.model.greedy_decode(src, max_len=max_len)


class EquituneSeq2Seq(SymmetrizedSeq2Seq):
    """Combines the views' next-token distributions at every step,
    ``p_t = Σ_g w_g(x) · g⁻¹·p(· | g·x, g·y_<t)``, picks ``y_t`` from ``p_t`` and feeds ``g·y_t``
    back to view ``g``; trains on the likelihood of ``p_t``. Probability averaging by default;
    log-probability averaging (the authors' option) renormalises a weighted geometric mean."""

    name = "equitune"

    @_shared_views
    def loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
             generator: torch.Generator | None = None, max_len: int = 50) -> Tensor:
        _, logp = self.step_logprobs(src, tgt, teacher_forcing=teacher_forcing,
                                     generator=generator)
        return F.nll_loss(logp.flatten(0, 1), tgt.flatten(), ignore_index=PAD)

    @torch.no_grad()
    @_shared_views
    def decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        return self.step_logprobs(src, max_len=max_len)[0]


class LambdaEquituneSeq2Seq(EquituneSeq2Seq):
    """Equitune with weights ``λ(g·x)`` normalised over the group.

    ``lambda_net`` scores a view from the mean of its encoder outputs, so λ is computed once per
    sequence and view, from the backbone's own features (detached by default, so λ's gradient
    stays out of the encoder).
    """

    name = "lambda_equitune"

    def __init__(self, model: Seq2Seq, action: GroupAction, lambda_net: nn.Module | None,
                 combine: Combine = "prob",
                 normalization: Literal["softplus", "softmax"] = "softplus",
                 detach_features: bool = True) -> None:
        super().__init__(model, action, combine)
        if lambda_net is None:
            raise ValueError("lambda_equitune needs a lambda_net")
        warn_per_view_dropout(lambda_net)
        self.lambda_net = lambda_net
        self.normalization, self.detach_features = normalization, detach_features

    def weights(self, state: DecoderState, batch: int) -> Tensor:
        mask = state.mask.unsqueeze(-1).to(state.enc.dtype)
        summary = (state.enc * mask).sum(1) / mask.sum(1)               # [G·B, H]
        if self.detach_features:
            summary = summary.detach()
        return normalize_weights(view_scores(self.lambda_net, summary, self.order),
                                 self.normalization)


class EquizeroSeq2Seq(SymmetrizedSeq2Seq):
    """Decodes every view on its own, scores each decoded sequence with a proxy over its real
    positions (up to and including EOS), and returns ``g*⁻¹·y_{g*}`` for the best ``g*`` per
    sequence."""

    name = "equizero"

    def __init__(self, model: Seq2Seq, action: GroupAction, combine: Combine = "prob",
                 proxy: SequenceProxy = "mean_max_prob",
                 surrogate: Literal["equitune", "identity"] = "equitune") -> None:
        super().__init__(model, action, combine)
        if proxy not in SEQUENCE_PROXIES:
            raise ValueError(f"unknown sequence proxy {proxy!r}; valid: "
                             f"{', '.join(SEQUENCE_PROXIES)}")
        if surrogate not in ("equitune", "identity"):
            raise ValueError(f"surrogate must be 'equitune' or 'identity', got {surrogate!r}")
        self.proxy, self.surrogate = proxy, surrogate

    @_shared_views
    def loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
             generator: torch.Generator | None = None, max_len: int = 50) -> Tensor:
        """Straight-through: the value is that of the view ``g*`` its greedy decoding selects,
        the gradient that of the equitune combination (the authors' estimator;
        ``surrogate='identity'``: of the selected view). Unforced steps feed each view its own
        prediction, as equizero decodes (feeding the combined prediction trains every view on
        the equitune decoding's prefixes, which on around_right are mostly wrong and made
        finetuning undo the zero-shot gains)."""
        with torch.no_grad():
            best = self.select(src, max_len)[1]
        _, combined, views = self.step_logprobs(src, tgt, teacher_forcing=teacher_forcing,
                                                generator=generator, per_view=True,
                                                feed="own")
        chosen = views[best, torch.arange(src.shape[0], device=src.device)]
        logp = (chosen if self.surrogate == "identity"
                else combined + (chosen - combined).detach())
        return F.nll_loss(logp.flatten(0, 1), tgt.flatten(), ignore_index=PAD)

    def _decode_views(self, gx: Tensor, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
        """Greedy decoding of every view with its summed proxy: ``(tokens, sums, counts)``.

        Without dropout a row's decoding is a function of the row, so identical rows (a view
        that equals another command of the batch, or a command the group fixes) are decoded
        once: 11 % of the add_jump test rows and 35 % of its validation rows under scan_verb.
        """
        def step_loss(logits: Tensor) -> Tensor:
            return _step_loss(logits, self.proxy)

        if self.model.training:      # dense: the views keep their rows, so they share masks
            return self.model.greedy_decode_scored(gx, max_len, step_loss, False)  # no compaction
        unique, inverse = torch.unique(gx, dim=0, return_inverse=True)
        if unique.shape[0] == gx.shape[0]:
            return self.model.greedy_decode_scored(gx, max_len, step_loss)
        tokens, sums, counts = self.model.greedy_decode_scored(unique, max_len, step_loss)
        return tokens[inverse], sums[inverse], counts[inverse]

    @_shared_views
    def select(self, src: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Decode every view, keep ``g*⁻¹·y_{g*}`` per sequence: ``(tokens, chosen g*)``."""
        batch = src.shape[0]
        tokens, sums, counts = self._decode_views(self.action.act_in_all(src), max_len)
        losses = _reduce_proxy(sums, counts, self.proxy, max_len, self.model.out_vocab)
        losses = losses.view(self.order, batch)
        best = losses.argmin(dim=0)                                        # [B]
        rows = best * batch + torch.arange(batch, device=src.device)
        return self.out_tokens.apply(tokens[rows], self.action.inverse(best)), best

    @torch.no_grad()
    def decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        return self.select(src, max_len)[0]


class CanonicalizeSeq2Seq(SymmetrizedSeq2Seq):
    """Canonicalization (:class:`~equiv.methods.Canonicalize`) of a seq2seq model: a
    canonicalizer scores every view of a command (``[|G|, B]``, equivariant:
    ``h(g·x)[k] = h(x)[k·g]``), the command's argmax ``g*`` names its canonical view ``g*·x``,
    which alone is decoded (greedy, ``B`` rows, not ``|G|·B``), and the decoded tokens are mapped
    back by ``g*⁻¹``. ``g·x`` picks ``g*·g⁻¹`` and so decodes the very same command ``g*·x``:
    ``decode(g·x) = g·decode(x)`` for any backbone.

    Ties take the lowest index (``argmax``), as equizero's sequence selection does: whole token
    sequences cannot be averaged. Scores tie (exactly) when views are the same command, i.e.
    for a command with a non-trivial stabiliser ``S`` (one the group's words do not occur in,
    such as ``turn left twice``); the tied elements form the coset ``g*·S``, whose views are all
    that one command, so ``g·x`` still decodes the same command and only the element it maps
    back by may differ by an ``s`` in ``S``. Hence the result is exactly equivariant when the
    stabiliser is trivial, and for a fixed command exactly when its decoding contains no token
    that ``S`` moves (true of every correct decoding: a command without ``jump`` has no
    ``I_JUMP``); a wrong decoding of a fixed command can break it (no single-view method can
    fix that; the equivariance probe of each run shows it). Scores of *different* views tying
    exactly is a float accident, not handled.

    The finetuning :meth:`loss` is the teacher-forced NLL of the canonical view's decoding
    against ``g*·y`` (the gold output moved to the view: equal to mapping the view's
    log-probabilities back by ``g*⁻¹`` and scoring ``y``), each sequence weighted by
    ``1 + p - stop_gradient(p)``, ``p = softmax(scores / temperature)[g*]``: the value is the
    selected view's NLL, and the canonicalizer gets the straight-through gradient (as
    :class:`~equiv.methods.Canonicalize`). The prior term (``prior_weight · prior_loss`` on
    upright training commands) is added by the protocol, not here: it is anchored at the
    identity, so it is not invariant and the loss here is. ``gradient="relaxed"`` (the
    softmax-weighted average of all views while training) is refused: on sequences it would be
    λ-equitune with softmax weights decoding all ``|G|·B`` views, and the training function
    would differ from the one-view evaluation at every step.
    """

    name = "canonicalize"

    def __init__(self, model: Seq2Seq, action: GroupAction, canonicalizer: nn.Module,
                 gradient: Literal["straight_through"] = "straight_through",
                 temperature: float = 1.0, prior_weight: float = 0.0) -> None:
        super().__init__(model, action)
        if gradient != "straight_through":
            raise ValueError(f"gradient={gradient!r} is not available for seq2seq "
                             "canonicalization; use 'straight_through'")
        check_canonicalizer(canonicalizer, action, temperature)
        self.canonicalizer = canonicalizer
        self.gradient, self.temperature, self.prior_weight = gradient, temperature, prior_weight

    def select(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """``(g* [B], scores [|G|, B])``: ``g*·src`` is the canonical view (lowest index among
        tied scores)."""
        scores = self.canonicalizer(src)
        return scores.argmax(dim=0), scores

    def prior_loss(self, src: Tensor) -> Tensor:
        """Mondal et al.'s prior: cross-entropy of the scores against the identity, for upright
        (training-distribution) commands."""
        scores = self.canonicalizer(src)
        return F.cross_entropy(scores.T, scores.new_zeros(scores.shape[1], dtype=torch.long))

    @torch.no_grad()
    def identity_share(self, src: Tensor) -> float:
        """Share of the commands whose canonical view is the command itself."""
        return (self.select(src)[0] == 0).double().mean().item()

    def loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
             generator: torch.Generator | None = None, max_len: int = 50) -> Tensor:
        best, scores = self.select(src)
        view, view_tgt = self.action.act_in(src, best), self.out_tokens.apply(tgt, best)
        batch = src.shape[0]
        forced = (torch.rand(batch, generator=generator) < teacher_forcing).to(src.device)
        state = self.model.encode(view)
        prev = torch.full((batch,), SOS, dtype=torch.long, device=src.device)
        steps = []
        for t in range(tgt.shape[1]):
            logits, state = self.model.decode_step(state, prev)
            steps.append(logits)
            prev = torch.where(forced, view_tgt[:, t], logits.detach().argmax(dim=-1))
        logits = torch.stack(steps, 1)
        nll = F.cross_entropy(logits.flatten(0, 1), view_tgt.flatten(), ignore_index=PAD,
                              reduction="none").view(batch, -1).sum(dim=1)
        p = (scores / self.temperature).softmax(dim=0)[best, torch.arange(batch,
                                                                          device=src.device)]
        weight = 1.0 + (p - p.detach())                 # value 1: straight-through
        return (weight * nll).sum() / (tgt != PAD).sum()

    @torch.no_grad()
    def decode(self, src: Tensor, max_len: int = 50) -> Tensor:
        best = self.select(src)[0]
        tokens = self.model.greedy_decode(self.action.act_in(src, best), max_len=max_len)
        return self.out_tokens.apply(tokens, self.action.inverse(best))


SEQ2SEQ_VARIANTS: dict[type[Symmetrizer], type[SymmetrizedSeq2Seq]] = {
    Vanilla: VanillaSeq2Seq, Equitune: EquituneSeq2Seq,
    LambdaEquitune: LambdaEquituneSeq2Seq, Equizero: EquizeroSeq2Seq,
    Canonicalize: CanonicalizeSeq2Seq,
}


def seq2seq_variant(method: str | type) -> type[SymmetrizedSeq2Seq]:
    """The seq2seq wrapper class of a generic method class (or of its config name)."""
    return method_variant(SEQ2SEQ_VARIANTS, method, "seq2seq")


def build_seq2seq_wrapper(model: Seq2Seq, action: GroupAction, method: str | type,
                          **options: Any) -> SymmetrizedSeq2Seq:
    """Wrap ``model`` with ``method``'s variant, given the options it takes of ``options``."""
    return build_variant(SEQ2SEQ_VARIANTS, method, "seq2seq", model, action, **options)
