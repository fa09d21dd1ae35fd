"""The seq2seq decoder's per-row state: a leaf that the model and its frozen decoder both use."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class DecoderState:
    """Everything the decoder needs between steps; every field is indexed by batch row.

    ``h``/``c`` are ``[B, H]`` (``c`` only for LSTM), ``enc`` the encoder outputs ``[B, S, H]``
    and ``mask`` ``[B, S]`` is True at real (non-PAD) source positions.
    """

    h: Tensor
    c: Tensor | None
    enc: Tensor
    mask: Tensor

    @property
    def batch_size(self) -> int:
        return self.h.shape[0]

    def index(self, idx: Tensor) -> DecoderState:
        """Select/reorder/repeat batch rows (e.g. ``repeat_interleave`` indices, drop finished)."""
        return DecoderState(
            h=self.h[idx],
            c=None if self.c is None else self.c[idx],
            enc=self.enc[idx],
            mask=self.mask[idx],
        )
