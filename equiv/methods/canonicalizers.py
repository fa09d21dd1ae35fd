"""Canonicalization networks: equivariant scores ``[|G|, B]`` of every group element.

A canonicalizer ``h`` must satisfy ``h(g·x)[k] = h(x)[k·g]``, so that the argmax of ``g·x``
names the same upright view as that of ``x`` (see :class:`~equiv.methods.Canonicalize`).

- :class:`ViewScorer` and its subclasses are Kaba et al.'s construction: one small network
  ``s`` of any architecture scores each view, ``h(x)[k] = s(k·x)``. Equivariance is by design
  (``k·(g·x)`` *is* ``(k·g)·x``, the same exact permutation of the input), for every group of
  the suite: images, token ids, control observations, grids. It costs ``|G|`` passes of the
  small network, never of the backbone.
- :class:`GroupConvCanonicalizer` is Mondal et al.'s group-equivariant CNN from ``equiadapt``
  (its lifting and group convolutions, their parameters, initialisation and index tables), for
  the image groups rot90, rot180, hflip and d4: one pass of a network with ``|G|`` rotated
  copies of each filter. ``equiadapt`` rotates the filters with ``kornia``'s bilinear warp,
  which is off by up to 1e-7 at quarter turns (``cos(π/2) ≠ 0`` in float32) and refuses
  float64 inputs (its angles are hard-coded float32); the subclasses here replace only that
  filter rotation by the exact ``torch.rot90``/``torch.flip``, so the scores are equivariant to
  rounding in float32 and float64 alike.
- :class:`SteerableCanonicalizer` is the same layout built from ``e2cnn``'s steerable
  convolutions (the library equiadapt's ESCNN networks use), for the interpolated rotations
  (``rot45``: C8): every filter copy is one continuous, band-limited function sampled at the
  turned grid, so the network is C8-equivariant up to sampling, where copies warped by
  interpolation (equiadapt's custom layers with 8 rotations) differ systematically between the
  quarter turns and the others (see the class).

Construction draws parameters from the global torch generator, like any module; with ``seed``
they are drawn from ``torch.manual_seed(seed)`` inside a forked random state, so building a
canonicalizer leaves the caller's random stream untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from equiv.data.vocab import PAD
from equiv.groups import GroupAction
from equiv.groups.images import PixelPermutation, d4_compose
from equiv.groups.rotations import GridRotation
from equiv.methods.lambda_equitune import view_scores


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Parameters drawn inside come from ``seed`` without touching the caller's random state
    (``None``: from the global generator as it is)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ViewScorer(nn.Module):
    """Kaba et al.'s canonicalizer: ``scores[k] = s(k·x)``, one network ``s`` for all views.

    ``s`` maps a batch of inputs to one score each (``[N]`` or ``[N, 1]``). The views run as one
    group-major stack, with :class:`~equiv.methods.dropout.GroupDropout` masks shared by the
    views of an example, so the scores stay equivariant in training mode.
    """

    def __init__(self, action: GroupAction, scorer: nn.Module) -> None:
        super().__init__()
        self.action = action
        self.scorer = scorer

    @property
    def order(self) -> int:
        return self.action.order

    def forward(self, x: Tensor) -> Tensor:
        return view_scores(self.scorer, self.action.act_in_all(x), self.action.order)


class _Score(nn.Module):
    """``head(body(x))`` squeezed to one score per row."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x)).squeeze(-1)


class ImageViewScorer(ViewScorer):
    """Images ``[B, C, H, W]`` (and Gridworld observations): a small CNN scores each view.

    ``pool`` average-pools first (e.g. 4 for 224-pixel CLIP inputs); ``depth`` 3×3 convolutions
    of ``width`` channels with ReLU, a 4×4 adaptive average pool (which keeps where things
    are, so the score can tell orientations apart) and a linear score.
    """

    def __init__(self, action: GroupAction, in_channels: int, width: int = 16, depth: int = 2,
                 pool: int = 1, seed: int | None = None) -> None:
        with seeded(seed):
            layers: list[nn.Module] = [nn.AvgPool2d(pool)] if pool > 1 else []
            channels = in_channels
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
            scorer = _Score(nn.Sequential(*layers), nn.Linear(channels * 16, 1))
        super().__init__(action, scorer)


class _TokenBody(nn.Module):
    def __init__(self, vocab_size: int, dim: int, hidden: int, pool: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pool = pool
        if pool == "gru":
            self.rnn = nn.GRU(dim, hidden, batch_first=True)
        else:
            self.proj = nn.Linear(dim, hidden)

    def forward(self, ids: Tensor) -> Tensor:
        """Features of the real tokens only: right padding (``PAD``) never changes a score, so
        a command scores the same in every batch (training batches are padded, evaluation
        batches of one length are not)."""
        e = self.embed(ids)                                       # [N, L, dim]
        real = ids != PAD
        if self.pool == "gru":
            last = (real.sum(dim=1) - 1).clamp_min(0)             # the last real position
            out = self.rnn(e)[0]                                  # [N, L, hidden]
            return out[torch.arange(ids.shape[0], device=ids.device), last]
        weight = real.unsqueeze(-1).to(e.dtype)
        return (torch.tanh(self.proj(e)) * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1)


class TokenViewScorer(ViewScorer):
    """Token ids ``[B, L]`` (SCAN commands, right-padded with ``PAD``): an embedding and a GRU
    (``pool="gru"``, order aware; its output at the last real token) or a mean over the real
    tokens (``"mean"``, a bag of words) score each view."""

    def __init__(self, action: GroupAction, vocab_size: int, dim: int = 32, hidden: int = 32,
                 pool: Literal["gru", "mean"] = "gru", seed: int | None = None) -> None:
        if pool not in ("gru", "mean"):
            raise ValueError(f"pool must be 'gru' or 'mean', got {pool!r}")
        with seeded(seed):
            scorer = _Score(_TokenBody(vocab_size, dim, hidden, pool), nn.Linear(hidden, 1))
        super().__init__(action, scorer)


class VectorViewScorer(ViewScorer):
    """Observation vectors ``[B, D]`` (CartPole, Acrobot): an MLP of ``depth`` hidden layers."""

    def __init__(self, action: GroupAction, in_features: int, hidden: int = 64, depth: int = 2,
                 seed: int | None = None) -> None:
        with seeded(seed):
            layers: list[nn.Module] = []
            width = in_features
            for _ in range(depth):
                layers += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            scorer = _Score(nn.Sequential(*layers), nn.Linear(width, 1))
        super().__init__(action, scorer)


# --- equiadapt's group-equivariant CNN, with exact quarter-turn filters -------------------------

# The suite's image groups as equiadapt's groups: (group_type, num_rotations).
EQUIADAPT_GROUPS: dict[tuple[tuple[int, int], ...], tuple[str, int]] = {
    ((0, 0), (1, 0), (2, 0), (3, 0)): ("rotation", 4),                       # rot90
    ((0, 0), (2, 0)): ("rotation", 2),                                       # rot180
    ((0, 0), (0, 1)): ("roto-reflection", 1),                                # hflip
    ((0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1), (3, 1)): ("roto-reflection", 4),
}


def _turn_copies(stack: Tensor, rotations: int) -> Tensor:
    """Copy ``i`` of a stack ``[|G|, ...]`` of filters turned as equiadapt's group element
    ``i``: ``i mod n`` steps of ``360/n`` degrees, then (``i ≥ n``) mirrored left-right."""
    turns = 4 // rotations
    return torch.stack([
        torch.rot90(w, (i % rotations) * turns, dims=(-2, -1)).flip(-1) if i >= rotations
        else torch.rot90(w, i * turns, dims=(-2, -1)) for i, w in enumerate(stack)])


def _exact_layers() -> tuple[type[nn.Module], ...]:
    """equiadapt's four layers with the filter rotation made exact (imported lazily: equiadapt
    pulls in e2cnn, seconds of import time that the other canonicalizers do not need)."""
    try:
        from equiadapt.images.canonicalization_networks import (
            custom_group_equivariant_layers as eq,
        )
    except ImportError as err:
        raise ImportError("GroupConvCanonicalizer needs equiadapt: pip install "
                          "'equiv[canonicalize]' (or use ImageViewScorer)") from err

    def lift_weights(self: nn.Module, weights: Tensor, num_rotations: int = 4) -> Tensor:
        order = num_rotations * (2 if hasattr(self, "num_group_elements") else 1)
        copies = _turn_copies(weights.expand(order, *weights.shape), num_rotations)
        return copies.transpose(0, 1).flatten(0, 1)             # [out·|G|, in, k, k]

    def group_weights(index_name: str):
        def weights_fn(self: nn.Module, weights: Tensor, num_rotations: int = 4) -> Tensor:
            out, inp, order, k, _ = weights.shape
            index = getattr(self, index_name).to(weights.device)
            moved = torch.gather(weights.flatten(0, 1).expand(order, -1, -1, -1, -1), 2, index)
            copies = _turn_copies(moved, num_rotations).view(order, out, inp, order, k, k)
            return copies.transpose(0, 1).reshape(out * order, inp * order, k, k)
        return weights_fn

    class Lift(eq.RotationEquivariantConvLift):
        get_rotated_weights = lift_weights

    class ReflectLift(eq.RotoReflectionEquivariantConvLift):
        get_rotoreflected_weights = lift_weights

    class Conv(eq.RotationEquivariantConv):
        get_rotated_permuted_weights = group_weights("permute_indices_along_group")

    class ReflectConv(eq.RotoReflectionEquivariantConv):
        get_rotoreflected_permuted_weights = group_weights("permute_indices")

    return Lift, ReflectLift, Conv, ReflectConv


def _inverse(e: tuple[int, int]) -> tuple[int, int]:
    return next(f for f in ((k, m) for m in (0, 1) for k in range(4)) if d4_compose(e, f) == (0, 0))


def equiadapt_element(j: int, group_type: str, rotations: int) -> tuple[int, int]:
    """equiadapt's group element ``j`` as the suite's ``(k, m)`` = ``R^k S^m``: the ``j``-th
    filter copy is ``R^(j·4/n)·w``, or for ``j ≥ n`` the mirror ``S R^a w = R^(-a) S w``."""
    turns = 4 // rotations
    if group_type == "rotation" or j < rotations:
        return (j * turns) % 4, 0
    return (-(j - rotations) * turns) % 4, 1


class _GroupCNNCanonicalizer(nn.Module):
    """What the group-CNN canonicalizers share: optional average pooling first (the side must be
    divisible by ``pool``, so pooling commutes with the group), then the network's one
    activation per group element, reordered by ``columns`` into the suite's element order."""

    action: GroupAction
    pool: int
    columns: Tensor

    @property
    def order(self) -> int:
        return self.action.order

    def activations(self, x: Tensor) -> Tensor:
        """``[B, |G|]`` in the network's element order."""
        raise NotImplementedError

    def prepared(self, x: Tensor) -> Tensor:
        """The input before pooling (the steerable network masks it to the disc)."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepared(x)
        if self.pool > 1:
            if x.shape[-1] % self.pool or x.shape[-2] % self.pool:
                raise ValueError(f"pool={self.pool} must divide the image side {x.shape[-1]}")
            x = nn.functional.avg_pool2d(x, self.pool)
        return self.activations(x).index_select(1, self.columns).T     # [|G|, B], suite order


class GroupConvCanonicalizer(_GroupCNNCanonicalizer):
    """equiadapt's group-equivariant CNN as a canonicalizer for rot90, rot180, hflip and d4.

    Architecture as equiadapt's ``CustomEquivariantNetwork``: a lifting convolution
    (``kernel_size``, no padding) to ``width`` channels per group element, then ``depth - 1``
    ReLU + 1×1 group convolutions, averaged over channels and positions: one activation per
    group element. equiadapt's activation ``j`` is high when the input looks like its filter
    copy ``T_j`` applied to an upright input, i.e. when the upright view is ``T_j⁻¹·x``; so
    the suite's score of element ``k`` is equiadapt's activation for ``T = k⁻¹``. ``pool``
    average-pools first (the side must be divisible by it, so pooling commutes with the group).
    """

    def __init__(self, action: GroupAction, in_channels: int, width: int = 16,
                 kernel_size: int = 5, depth: int = 2, pool: int = 1,
                 seed: int | None = None) -> None:
        super().__init__()
        rep = action.rep_in
        key = tuple(rep.elements) if isinstance(rep, PixelPermutation) else None
        if key not in EQUIADAPT_GROUPS:
            raise ValueError(f"GroupConvCanonicalizer supports the image groups rot90, rot180, "
                             f"hflip and d4, not {action.name!r}")
        group_type, rotations = EQUIADAPT_GROUPS[key]
        lift, reflect_lift, conv, reflect_conv = _exact_layers()
        if group_type == "roto-reflection":
            lift, conv = reflect_lift, reflect_conv
        with seeded(seed):
            layers: list[nn.Module] = [lift(in_channels, width, kernel_size, rotations,
                                            device="cpu")]
            for _ in range(depth - 1):
                layers += [nn.ReLU(), conv(width, width, 1, rotations, device="cpu")]
        self.net = nn.Sequential(*layers)
        self.action = action
        self.pool = pool
        position = {e: j for j, e in enumerate(
            equiadapt_element(j, group_type, rotations) for j in range(len(key)))}
        self.register_buffer("columns", torch.tensor([position[_inverse(e)] for e in key]),
                             persistent=False)

    def activations(self, x: Tensor) -> Tensor:
        return self.net(x).mean(dim=(1, 3, 4))                      # equiadapt's order


# --- e2cnn's steerable CNN, for the interpolated rotations --------------------------------------

def _steerable_conv() -> type[nn.Module]:
    """e2cnn's ``R2Conv`` on plain tensors, its filter expanded at every call (imported lazily,
    as equiadapt's layers are). e2cnn caches the expanded filter as a buffer when the module is
    switched to evaluation mode: stale if the parameters change meanwhile, and a ``state_dict``
    whose keys depend on the mode; expanding a small canonicalizer's filters costs little."""
    try:
        from e2cnn import nn as enn
    except ImportError as err:
        raise ImportError("SteerableCanonicalizer needs e2cnn: pip install "
                          "'equiv[canonicalize]' (or use ImageViewScorer)") from err

    class Conv(enn.R2Conv):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            del self.filter, self.expanded_bias             # the cache, never used here

        def train(self, mode: bool = True) -> nn.Module:
            return nn.Module.train(self, mode)

        def forward(self, x: Tensor) -> Tensor:            # type: ignore[override]
            weight, bias = self.expand_parameters()
            return nn.functional.conv2d(x, weight, bias, padding=self.padding)

    return Conv


# The pixel-exact rotation groups (rot90, rot180): element i turns by i·360/|G| degrees.
STEERABLE_PIXEL_GROUPS = (((0, 0), (1, 0), (2, 0), (3, 0)), ((0, 0), (2, 0)))


class SteerableCanonicalizer(_GroupCNNCanonicalizer):
    """A C_n-steerable CNN (``e2cnn``) as the canonicalizer of the interpolated rotations
    (``equiv.groups.rotations``, e.g. ``rot45``; also rot90 and rot180, so that the subgroups
    run on the same task), laid out as :class:`GroupConvCanonicalizer`:
    a ``kernel_size`` lifting convolution to ``width`` regular fields, then ``depth - 1`` ReLU +
    1×1 convolutions, averaged over fields and positions: one activation per element. The
    input is masked to the disc first, as every view of the group is.

    Why not equiadapt's own layers with 8 rotations: their filter copies are the one filter
    warped by kornia's bilinear interpolation, so the 45° copies are blurred (and lose their
    corners) and the network tells the odd elements from the even ones by the filters alone;
    trained with the prior on upright Fashion-MNIST it never turned a 45°-turned test image
    back, where this network does about half the time (``scripts/rot45_errors.py``). Here every
    copy samples the same continuous function. The quarter turns permute the sampling grid, so
    the scores are exactly equivariant under them up to the rounding of the sampled basis
    (~1e-17 in float64).
    """

    def __init__(self, action: GroupAction, in_channels: int, width: int = 16,
                 kernel_size: int = 5, depth: int = 2, pool: int = 1,
                 seed: int | None = None) -> None:
        super().__init__()
        rep = action.rep_in
        turns = tuple(rep.elements) if isinstance(rep, PixelPermutation) else None
        if not (isinstance(rep, GridRotation) or turns in STEERABLE_PIXEL_GROUPS):
            raise ValueError(f"SteerableCanonicalizer supports the rotation groups rot45, rot90 "
                             f"and rot180, not {action.name!r}")
        conv = _steerable_conv()
        from e2cnn import gspaces
        from e2cnn import nn as enn

        space = gspaces.Rot2dOnR2(action.order)
        fields = enn.FieldType(space, [space.regular_repr] * width)
        # recompute: e2cnn shares one sampled basis module between layers by default, so moving
        # one network to float64 or another device would move the others' basis with it.
        with seeded(seed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "indexing with dtype torch.uint8")   # e2cnn's own
            layers: list[nn.Module] = [
                conv(enn.FieldType(space, [space.trivial_repr] * in_channels), fields,
                     kernel_size, recompute=True)]
            for _ in range(depth - 1):
                layers += [nn.ReLU(), conv(fields, fields, 1, recompute=True)]
        self.net = nn.Sequential(*layers)
        self.action, self.width, self.pool = action, width, pool
        self.grid = rep if isinstance(rep, GridRotation) else None
        # e2cnn's regular field: channel j is the turn by j steps, shifted by g when the input
        # turns by g; the score of k is the activation of k⁻¹ (see GroupConvCanonicalizer).
        self.register_buffer("columns", torch.tensor([(-k) % action.order
                                                      for k in range(action.order)]),
                             persistent=False)

    def prepared(self, x: Tensor) -> Tensor:
        return x if self.grid is None else self.grid.mask(x)

    def activations(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return out.view(x.shape[0], self.width, self.order, *out.shape[-2:]).mean(
            dim=(1, 3, 4))                                           # e2cnn's order
