"""``method=canonicalize`` on CLIP: the canonicalizer's phases on training batches from the
DataLoader (images are preprocessed on the fly, never held in memory), mirroring the image
family's (``equiv.experiments.canonicalizer_phases``).

What can be cached: in the canonicalizer phase the image tower is frozen (weights and eval
mode), so its output on a given view of a training image never changes; *which* view the
canonicalizer picks does, as it learns. So outputs are kept per (training image, view) and
computed the first time a step needs them (:class:`FrozenViewOutputs`): never more backbone rows
than running the wrapper itself, and a revisited image reuses them whatever transformation it
comes with. Caching every view of every image up front (as λ-equitune's phase does, which needs
all ``|G|`` features anyway) would cost ``|G|`` passes per image where the straight-through
phase needs one. The canonicalizer runs on every batch (its scores are what learns), the prior
phase runs no backbone at all, and finetuning trains the tower: nothing to cache there.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from equiv.experiments.canonicalizer_phases import train_canonicalizer
from equiv.groups import GroupAction
from equiv.groups.images import PixelPermutation, d4_compose
from equiv.groups.sampling import transform_elements
from equiv.methods import Canonicalize
from equiv.methods.base import batched_call

Batches = Iterator[tuple[Tensor, Tensor, Tensor]]          # (images, labels, dataset indices)


def view_slots(action: GroupAction, transform: GroupAction) -> Tensor:
    """``[|G|, |T|]``: an index of the view ``k·(t·x)`` of an upright image ``x``, the same
    for the same view. Image groups: the rotation/mirror ``k·t`` it applies (so the upright
    view of ``t·x``, ``t⁻¹·(t·x)``, is one slot for every ``t``); other groups: the pair."""
    a, t = action.rep_in, transform.rep_in
    if not (isinstance(a, PixelPermutation) and isinstance(t, PixelPermutation)):
        return torch.arange(action.order * transform.order).view(action.order, transform.order)
    views = [[d4_compose(k, s) for s in t.elements] for k in a.elements]
    slots = sorted({v for row in views for v in row})
    return torch.tensor([[slots.index(v) for v in row] for row in views])


class FrozenViewOutputs:
    """``model``'s training output on a batch ``t·x`` with the frozen backbone's outputs on
    the views looked up: each (image, view) goes through the backbone once, on first use.

    Valid only while the backbone is frozen and in eval mode (the canonicalizer phase); the
    value and the canonicalizer's gradient are those of ``model(t·x)`` (tested).
    """

    def __init__(self, model: Canonicalize, transform: GroupAction, images: int) -> None:
        self.model = model
        self.slot = view_slots(model.action, transform)
        self.slots = int(self.slot.max()) + 1
        self.known = torch.zeros(images * self.slots, dtype=torch.bool)
        self.values: Tensor | None = None
        self.requested = self.computed = 0

    def outputs(self, xt: Tensor, keys: Tensor, rows: Tensor, element: Tensor) -> Tensor:
        """``M(element[j]·xt[rows[j]])`` for every ``j``; ``keys[j]`` names that view."""
        self.requested += len(keys)
        new = torch.unique(keys[~self.known[keys]])
        if len(new):
            first = (keys.unsqueeze(0) == new.unsqueeze(1)).int().argmax(dim=1)  # a j per key
            views = self.model.action.act_in(xt[rows[first].to(xt.device)],
                                             element[first].to(xt.device))
            with torch.no_grad():
                y = batched_call(self.model.backbone, views, self.model.chunk_size)
            if self.values is None:
                self.values = y.new_empty(len(self.known), *y.shape[1:])
            self.values[new.to(y.device)] = y
            self.known[new] = True
            self.computed += len(new)
        assert self.values is not None
        return self.values[keys.to(self.values.device)]

    def __call__(self, xt: Tensor, index: Tensor, t: Tensor) -> Tensor:
        """The output on ``xt = t·x`` for the training images ``index`` (CPU tensors)."""
        model = self.model
        scores = model.scores(xt)
        if model.gradient == "relaxed":                  # every view, group-major
            order, b = model.action.order, len(xt)
            rows, element = torch.arange(b).repeat(order), torch.arange(order).repeat_interleave(b)
            y = self.outputs(xt, self.key(index, t, rows, element), rows, element)
            return model.relaxed(scores, model.align(y))
        sel = model.selection(xt, scores)
        rows, element = sel.example.cpu(), sel.element.cpu()
        return model.combine(sel, self.outputs(xt, self.key(index, t, rows, element), rows,
                                               element))

    def key(self, index: Tensor, t: Tensor, rows: Tensor, element: Tensor) -> Tensor:
        return index[rows] * self.slots + self.slot[element, t[rows]]


def prior_phase(model: Canonicalize, batches: Batches, ph: DictConfig,
                device: torch.device) -> None:
    """Phase 0 (the zero-shot column): the canonicalizer learns that upright training images
    are canonical; no backbone pass."""
    train_canonicalizer(model, lambda: next(batches)[0].to(device), ph.steps, ph.lr,
                        desc="prior phase")


def canonicalizer_phase(model: Canonicalize, batches: Batches, transform: GroupAction,
                        train_images: int, ph: DictConfig, transform_mode: str,
                        gen: torch.Generator, device: torch.device) -> dict[str, int]:
    """Phase 1: image tower frozen; the canonicalizer learns from the classification loss on
    transformed training images (one element each, drawn as finetuning draws them) and the
    prior on the same images upright. Returns the view rows the steps asked for and those the
    backbone ran (the others came from the cache)."""
    cached = FrozenViewOutputs(model, transform, train_images)
    batch: dict[str, Tensor] = {}

    def upright() -> Tensor:
        batch["x"], batch["y"], batch["index"] = next(batches)
        return batch["x"].to(device)

    def task_loss() -> Tensor:
        x = batch["x"]
        t = transform_elements(len(x), transform.order, transform_mode, len(x), gen)
        xt = transform.act_in(x.to(device), t.to(device))
        return F.cross_entropy(cached(xt, batch["index"], t), batch["y"].to(device))

    train_canonicalizer(model, upright, ph.steps, ph.lr, desc="canonicalizer phase",
                        task_loss=task_loss)
    return {"requested_rows": cached.requested, "backbone_rows": cached.computed}
