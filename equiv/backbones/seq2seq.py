"""Encoder–decoder RNN with attention for SCAN (Lake & Baroni 2018; Gordon et al. 2020).

The decoder is exposed step by step (``encode`` → ``decode_step``) with an explicit,
batch-indexable :class:`DecoderState`, because the symmetrizers run all |G|·B transformed
commands through the model as one batch and combine their next-token distributions at every
step; they need to repeat, gather and drop rows of the state between steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from equiv.backbones.decoder_state import DecoderState
from equiv.backbones.seq2seq_inference import FrozenDecoder, FrozenState
from equiv.data.vocab import EOS, PAD, SOS
from equiv.methods.dropout import GroupDropout

__all__ = ["EOS", "PAD", "SOS", "DecoderState", "Seq2Seq", "pad_batch", "trim_at_eos"]

Cell = Literal["rnn", "gru", "lstm"]

_SEQ_MODULES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
_CELL_MODULES: dict[str, type[nn.Module]] = {
    "rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell,
}


def pad_batch(seqs: list[list[int]], pad: int = PAD) -> Tensor:
    """Right-pad id lists into a ``LongTensor [B, max_len]`` (vocabularies are built elsewhere)."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def trim_at_eos(tokens: Tensor, eos: int = EOS) -> list[list[int]]:
    """Turn decoded ``[B, L]`` ids into lists ending before the first EOS (or PAD).

    Convenience for exact-match scoring of :meth:`Seq2Seq.greedy_decode` output.
    """
    out: list[list[int]] = []
    for row in tokens.tolist():
        seq: list[int] = []
        for t in row:
            if t in (eos, PAD):
                break
            seq.append(t)
        out.append(seq)
    return out


class Seq2Seq(nn.Module):
    """Bidirectional-encoder / attentional-decoder RNN over integer token ids.

    * Encoder: embedding → dropout → RNN/GRU/LSTM over the packed true-length commands, so
      padding cannot influence any result. The two directions' outputs are summed to
      ``hidden``, and their final states are summed to initialise the decoder (parameter-free,
      as in the SCAN baselines).
    * Decoder step: embedding → dropout → cell → Luong "general" attention
      (``score = (W_a h_t) · enc_s``, PAD positions set to -inf) → ``tanh(W_c[ctx; h_t])`` →
      linear to ``out_vocab`` logits. No input feeding, so the state is just ``(h, c)`` plus
      the (constant) encoder memory.
    """

    def __init__(self, in_vocab: int, out_vocab: int, hidden: int = 64, cell: Cell = "lstm",
                 bidirectional: bool = True, dropout: float = 0.1,
                 attention: bool = True) -> None:
        super().__init__()
        if cell not in _SEQ_MODULES:
            raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(_SEQ_MODULES)}")
        self.in_vocab, self.out_vocab, self.hidden = in_vocab, out_vocab, hidden
        self.cell_type: Cell = cell
        self.bidirectional, self.attention = bidirectional, attention

        self.src_embed = nn.Embedding(in_vocab, hidden, padding_idx=PAD)
        self.encoder = _SEQ_MODULES[cell](hidden, hidden, batch_first=True,
                                          bidirectional=bidirectional)
        self.tgt_embed = nn.Embedding(out_vocab, hidden, padding_idx=PAD)
        self.decoder = _CELL_MODULES[cell](hidden, hidden)
        # nn.Dropout's values and random draws unless a symmetrizer binds its group order
        # (then one mask per example, shared by its views: equivariant in training mode)
        self.drop = GroupDropout(dropout)
        if attention:
            self.att_query = nn.Linear(hidden, hidden, bias=False)
            self.att_combine = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, out_vocab)
        # Greedy decoding in eval mode without gradient runs the FrozenDecoder; False keeps
        # decode_step (benchmarks measure what the frozen step adds on top of batching).
        self.use_frozen_decoder = True

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, src: Tensor) -> DecoderState:
        """Encode ``src [B, S]`` (PAD-right-padded) into the initial decoder state."""
        mask = src != PAD
        lengths = mask.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("every source sequence needs at least one non-PAD token")
        b, s = src.shape
        emb = self.drop(self.src_embed(src))
        if bool((lengths == s).all()):
            # No padding (evaluation batches are grouped by length): the unpacked call gives the
            # same result and takes the fused (oneDNN) kernel, ~3x faster on CPU than packed.
            out, final = self.encoder(emb)
        else:
            packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            out_packed, final = self.encoder(packed)
            out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=s)
        if self.bidirectional:
            out = out.view(b, s, 2, self.hidden).sum(2)
        # final states are [num_directions, B, H] and already in the original batch order.
        if self.cell_type == "lstm":
            h, c = final[0].sum(0), final[1].sum(0)
        else:
            h, c = final.sum(0), None
        return DecoderState(h=h, c=c, enc=out, mask=mask)

    def decode_step(self, state: DecoderState, prev: Tensor, keep: Tensor | None = None
                    ) -> tuple[Tensor, DecoderState]:
        """Feed the previous token ``prev [B]``; return next-token logits ``[B, V]`` and state.

        ``keep``: this step's dropout multiplier drawn in advance (``GroupDropout.masks``), else
        dropout draws its own. The modules' functions are called directly (the same kernels,
        without the per-call module overhead: training steps are overhead-bound).
        """
        x = F.embedding(prev, self.tgt_embed.weight, PAD)
        x = self.drop(x) if keep is None else x * keep
        h, c = self._cell(x, state.h, state.c)
        if self.attention:
            query = F.linear(h, self.att_query.weight)
            scores = torch.bmm(state.enc, query.unsqueeze(2)).squeeze(2)  # [B, S]
            weights = scores.masked_fill(~state.mask, float("-inf")).softmax(1)
            ctx = torch.bmm(weights.unsqueeze(1), state.enc).squeeze(1)  # [B, H]
            combine = self.att_combine
            feat = torch.tanh(F.linear(torch.cat([ctx, h], 1), combine.weight, combine.bias))
        else:
            feat = h
        return F.linear(feat, self.out.weight, self.out.bias), \
            DecoderState(h=h, c=c, enc=state.enc, mask=state.mask)

    def _cell(self, x: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The decoder cell's own op (what ``nn.RNNCell``/``GRUCell``/``LSTMCell`` call)."""
        d = self.decoder
        weights = (d.weight_ih, d.weight_hh, d.bias_ih, d.bias_hh)
        if self.cell_type == "lstm":
            return torch.lstm_cell(x, (h, c), *weights)
        if self.cell_type == "gru":
            return torch.gru_cell(x, h, *weights), None
        return torch.rnn_tanh_cell(x, h, *weights), None

    # ------------------------------------------------------------------ whole sequences
    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits ``[B, T, V]``; ``tgt_in`` starts with SOS."""
        state = self.encode(src)
        steps = []
        for t in range(tgt_in.shape[1]):
            logits, state = self.decode_step(state, tgt_in[:, t])
            steps.append(logits)
        return torch.stack(steps, 1)

    def greedy_decode(self, src: Tensor, max_len: int = 50,
                      return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Batched greedy decoding: ``[B, L]`` ids without SOS, with EOS then PAD, L ≤ max_len.

        The loop stops once every row has emitted EOS. With ``return_logits`` also returns the
        per-step logits ``[B, L, V]``; entries after a row's EOS are meaningless. Gradient and
        dropout follow the caller's ``torch.no_grad()`` / ``eval()`` settings. Without gradient,
        finished rows are dropped from the batch once they are a quarter of it, so a batch of
        mixed output lengths costs about the sum of its lengths, not B × the longest; in eval
        mode the steps run through :class:`~equiv.backbones.seq2seq_inference.FrozenDecoder`.
        """
        if torch.is_grad_enabled():
            return self._greedy_dense(self.encode(src), src.shape[0], max_len, return_logits)
        tokens, logits, _, _ = self._greedy_compact(src, max_len, return_logits, None)
        return (tokens, logits) if return_logits else tokens

    @torch.no_grad()
    def greedy_decode_scored(self, src: Tensor, max_len: int,
                             step_score: Callable[[Tensor], Tensor], compact: bool = True
                             ) -> tuple[Tensor, Tensor, Tensor]:
        """Greedy decoding that also sums ``step_score(logits [R, V]) -> [R]`` over each row's
        real positions (through its first EOS): ``(tokens [B, L], sums [B], counts [B])``.

        For selecting among decodings (equizero's proxy) without keeping ``[B, L, V]`` logits;
        no gradient. ``compact=False`` keeps finished rows in the batch (fed PAD), as group-shared
        dropout masks need.
        """
        tokens, _, sums, counts = self._greedy_compact(src, max_len, False, step_score, compact)
        assert sums is not None and counts is not None
        return tokens, sums, counts

    def stepper(self, state: DecoderState
                ) -> tuple[Callable[..., tuple[Tensor, Any]], DecoderState | FrozenState]:
        """The decoder step to run from ``state``, and the state it takes: the equal but faster
        :class:`~equiv.backbones.seq2seq_inference.FrozenDecoder` when nothing is trained and
        dropout is off (eval mode, no gradient, ``use_frozen_decoder``), else ``decode_step``."""
        if self.use_frozen_decoder and not self.training and not torch.is_grad_enabled():
            frozen = FrozenDecoder(self)
            return frozen.step, frozen.prepare(state)
        return self.decode_step, state

    def _greedy_compact(self, src: Tensor, max_len: int, keep_logits: bool,
                        step_score: Callable[[Tensor], Tensor] | None, compact: bool = True
                        ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
        """The no-gradient greedy loop: finished rows leave the batch."""
        step, state = self.stepper(self.encode(src))
        b, device = src.shape[0], src.device
        tokens = torch.full((b, max_len), PAD, dtype=torch.long, device=device)
        dtype = self.out.weight.dtype
        logits_out = torch.zeros(b, max_len, self.out_vocab, dtype=dtype, device=device) \
            if keep_logits else None
        sums = torch.zeros(b, dtype=dtype, device=device) if step_score is not None else None
        counts = torch.zeros(b, dtype=torch.long, device=device)
        rows = torch.arange(b, device=device)          # original row of each active row
        alive = torch.ones(b, dtype=torch.bool, device=device)
        prev = torch.full((b,), SOS, dtype=torch.long, device=device)
        steps = 0
        for t in range(max_len):
            logits, state = step(state, prev)
            tok = logits.argmax(1).masked_fill(~alive, PAD)
            tokens[rows, t] = tok
            if logits_out is not None:
                logits_out[rows, t] = logits
            if sums is not None and step_score is not None:
                sums.index_add_(0, rows, step_score(logits).masked_fill(~alive, 0.0))
            counts.index_add_(0, rows, alive.long())
            alive = alive & (tok != EOS)
            steps = t + 1
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            prev = tok
            if compact and n_alive <= 0.75 * len(rows):     # compact: drop the finished rows
                keep = alive.nonzero().squeeze(1)
                state, rows, prev = state.index(keep), rows[keep], prev[keep]
                alive = torch.ones(len(keep), dtype=torch.bool, device=device)
        out = tokens[:, :steps]
        return out, None if logits_out is None else logits_out[:, :steps], sums, counts

    def _greedy_dense(self, state: DecoderState, b: int, max_len: int,
                      return_logits: bool) -> Tensor | tuple[Tensor, Tensor]:
        """Greedy decoding that keeps every row in the batch (finished rows fed PAD): the
        autograd-friendly path, with no in-place writes into shared buffers."""
        device = state.h.device
        prev = torch.full((b,), SOS, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        tokens, all_logits = [], []
        for _ in range(max_len):
            logits, state = self.decode_step(state, prev)
            tok = logits.argmax(1).masked_fill(done, PAD)
            tokens.append(tok)
            all_logits.append(logits)
            done = done | (tok == EOS)
            prev = tok
            if bool(done.all()):
                break
        if tokens:
            out = torch.stack(tokens, 1)
            stacked = torch.stack(all_logits, 1)
        else:
            out = torch.empty(b, 0, dtype=torch.long, device=device)
            stacked = torch.empty(b, 0, self.out_vocab, device=device)
        return (out, stacked) if return_logits else out

    def train_step_loss(self, src: Tensor, tgt: Tensor, teacher_forcing: float = 0.5,
                        generator: torch.Generator | None = None) -> Tensor:
        """Token-mean cross-entropy over non-PAD positions of ``tgt`` (gold ids ending in EOS).

        Teacher forcing is decided per sequence (one Bernoulli draw per row, as in the
        batch-size-1 original): forced rows are fed the gold previous token, the others their
        own argmax. Exactly B draws are taken regardless of T, so extra padding leaves both the
        draws and the loss unchanged.
        """
        b, t_len = tgt.shape
        rng_device = generator.device if generator is not None else src.device
        forced = (torch.rand(b, generator=generator, device=rng_device)
                  < teacher_forcing).to(src.device)
        state = self.encode(src)
        keep = self.drop.masks(t_len, (b, self.hidden), state.h)    # after the encoder's draw
        prev = torch.full((b,), SOS, dtype=torch.long, device=src.device)
        steps = []
        for t in range(t_len):
            logits, state = self.decode_step(state, prev, None if keep is None else keep[t])
            steps.append(logits)
            prev = torch.where(forced, tgt[:, t], logits.detach().argmax(1))
        logits = torch.stack(steps, 1)
        return F.cross_entropy(logits.reshape(-1, self.out_vocab), tgt.reshape(-1),
                               ignore_index=PAD)
