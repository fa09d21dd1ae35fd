"""Rotations of square images by multiples of ``360°/n`` (``n`` divisible by 4): only approximately
a group action, since a pixel grid is symmetric under quarter turns alone.

Element ``k = q·(n/4) + t`` turns an image counter-clockwise (as ``torch.rot90``) by ``t`` fine
steps of ``360°/n`` (bilinear interpolation about the image centre, zero outside the grid) and then
by ``q`` exact quarter turns (``torch.rot90``). Every view, the identity's included, is multiplied
by the disc inscribed in the square (pixel centres within ``side/2`` of the centre): the corners,
which a fine turn moves out of the frame, are dropped from every element alike, so a view differs
from another only by the turn and never by what a corner held. With ``M`` that mask, ``R`` a
quarter turn and ``I_t`` the interpolation, ``a(k, x) = M·R^q·I_t(M·x)``, and:

- the quarter turns ``C4 ⊂ Cn`` act exactly (pixel permutations of the masked image), and
  ``a(g, a(h, x)) == a(gh, x)`` bit for bit whenever ``g`` or ``h`` is a quarter turn: the
  interpolation tables are built to commute exactly with ``torch.rot90`` (rotated output pixels
  read rotated source pixels with the same weights, summed in the same order);
- for two fine turns ``a(g, a(h, x))`` interpolates twice where ``a(gh, x)`` interpolates once
  (or not at all): the action's error, measured by ``equiv.testing.composition_error``;
- ``a(0, x) = M·x``: on images the mask has already been applied to (every transformed test
  image), the identity is the identity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from equiv.groups.base import GroupAction, Representation


class GridRotation(Representation):
    """``C_n`` acting on square images ``[B, ..., S, S]`` as described in the module docstring."""

    def __init__(self, n: int) -> None:
        if n < 4 or n % 4:
            raise ValueError(f"rotations need a multiple of 4 elements (C4 stays exact), got {n}")
        self.n = n
        self.fine = n // 4                                     # elements per quarter turn
        self._cache: dict[tuple, tuple[Tensor, ...]] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridRotation) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("GridRotation", self.n))

    @property
    def quarter_turns(self) -> tuple[int, ...]:
        """The elements that act exactly (multiples of 90°)."""
        return tuple(range(0, self.n, self.fine))

    def mask(self, x: Tensor) -> Tensor:
        """``M·x``: pixels outside the inscribed disc set to zero."""
        return x * self._tables(x)[0]

    def apply(self, x: Tensor, g: Tensor) -> Tensor:
        z = self.mask(x)
        q, t = torch.div(g, self.fine, rounding_mode="floor"), g % self.fine
        if bool((t > 0).any()):
            z = z.clone()
            for step in range(1, self.fine):
                rows = t == step
                if bool(rows.any()):
                    z[rows] = self.mask(self._interpolate(z[rows], step))
        return _turn_rows(z, q)

    def apply_all(self, x: Tensor, order: int) -> Tensor:
        if order != self.n:
            raise ValueError(f"expected {self.n} elements, got {order}")
        z = self.mask(x)
        fine = [z, *(self.mask(self._interpolate(z, step)) for step in range(1, self.fine))]
        return torch.cat([torch.rot90(f, q, dims=(-2, -1)) for q in range(4) for f in fine])

    def _interpolate(self, x: Tensor, step: int) -> Tensor:
        """``I_step``: each pixel a bilinear blend of four source pixels (fixed order)."""
        side = x.shape[-1]
        sources, weights = self._tables(x)[2 * step - 1: 2 * step + 1]
        flat = torch.nn.functional.pad(x.reshape(*x.shape[:-2], side * side), (0, 1))
        out = flat.index_select(-1, sources[:, 0]) * weights[:, 0]
        for i in range(1, 4):
            out = out + flat.index_select(-1, sources[:, i]) * weights[:, i]
        return out.view_as(x)

    def _tables(self, x: Tensor) -> tuple[Tensor, ...]:
        """``(mask, sources_1, weights_1, ..., sources_{n/4-1}, weights_{n/4-1})`` for ``x``'s
        side, device and dtype (built once in float64)."""
        side = x.shape[-1]
        if x.shape[-2] != side:
            raise ValueError(f"rotations need square images, got {x.shape[-2]}x{side}")
        key = (side, x.device, x.dtype)
        if key not in self._cache:
            centred = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
            inside = centred[:, None] ** 2 + centred[None, :] ** 2 <= (side / 2) ** 2
            tables: list[Tensor] = [inside.to(x.dtype)]
            for step in range(1, self.fine):
                sources, weights = interpolation_table(side, 2 * math.pi * step / self.n)
                tables += [sources, weights.to(x.dtype)]
            self._cache[key] = tuple(t.to(x.device) for t in tables)
        return self._cache[key]


def _turn_rows(x: Tensor, q: Tensor) -> Tensor:
    """Row ``b`` of ``x`` turned by ``q[b]`` exact quarter turns."""
    out = x.clone()
    for turns in range(1, 4):
        rows = q == turns
        if bool(rows.any()):
            out[rows] = torch.rot90(x[rows], turns, dims=(-2, -1))
    return out


def interpolation_table(side: int, angle: float) -> tuple[Tensor, Tensor]:
    """Bilinear turn by ``angle`` (radians, counter-clockwise as ``torch.rot90``) of a
    ``side × side`` image: output pixel ``p`` is ``Σ_i weights[p, i]·x[sources[p, i]]``, with
    source ``side²`` a zero outside the grid. One pixel of each quarter-turn orbit is computed;
    the other three copy its row with rotated sources, so the table commutes with ``torch.rot90``
    exactly (not only up to rounding of the sample coordinates)."""
    n = side * side
    centre = (side - 1) / 2
    row, col = torch.meshgrid(torch.arange(side, dtype=torch.float64),
                              torch.arange(side, dtype=torch.float64), indexing="ij")
    y, x = (row - centre).reshape(-1), (col - centre).reshape(-1)
    c, s = math.cos(angle), math.sin(angle)
    src_row, src_col = c * y + s * x + centre, -s * y + c * x + centre   # θ = 90°: rot90's map
    r0, c0 = src_row.floor(), src_col.floor()
    fr, fc = src_row - r0, src_col - c0
    sources, weights = [], []
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                      (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, cc = (r0 + dr).long(), (c0 + dc).long()
        valid = (r >= 0) & (r < side) & (cc >= 0) & (cc < side)
        sources.append(torch.where(valid, r * side + cc, n))
        weights.append(w)
    sources_t, weights_t = torch.stack(sources, 1), torch.stack(weights, 1)   # [n, 4]

    grid = torch.arange(n).view(side, side)
    turned = [torch.cat([torch.rot90(grid, j).reshape(-1), torch.tensor([n])]) for j in range(4)]
    orbit = torch.stack([t[:n] for t in turned])                              # [4, n]
    reps = torch.nonzero(orbit.min(dim=0).values == torch.arange(n)).squeeze(1)
    for j in range(1, 4):
        target = turned[j][reps]
        moved = target != reps                                  # the centre is its own orbit
        sources_t[target[moved]] = turned[j][sources_t[reps[moved]]]
        weights_t[target[moved]] = weights_t[reps[moved]]
    return sources_t, weights_t


def exact_elements(action: GroupAction) -> tuple[int, ...] | None:
    """The elements on which ``action`` acts exactly on its inputs when it is only approximately
    a group action (interpolated rotations: the quarter turns); ``None`` when every element is
    exact (every other group of the suite)."""
    rep = action.rep_in
    return rep.quarter_turns if isinstance(rep, GridRotation) else None
