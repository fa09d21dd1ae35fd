"""Images: symmetrized forward vs its cost floor; the λ phase with cached vs recomputed features.

The floor of a symmetrized forward is one backbone pass over the ``|G|·B`` transformed images; the
wrappers add only the pixel permutation (one ``gather``) and a combination over ``|G|``. Both
sides run on the same random-init backbone, one after the other, best of ``--images-repeats``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scripts.benchmarks.common import Section, peak_rss_mb, timed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images-batch", type=int, default=32)
    parser.add_argument("--images-repeats", type=int, default=3)
    parser.add_argument("--images-backbones", default="small_cnn,clip_rn50,clip_vitb32",
                        help="comma-separated: small_cnn, small_resnet, clip_rn50, clip_vitb32")
    parser.add_argument("--images-lambda-epochs", type=int, default=10)
    parser.add_argument("--images-lambda-images", type=int, default=2048)


def clip_backbone(arch: str, classes: int = 100) -> tuple[nn.Module, int]:
    """A random-init open_clip image tower with a random unit-norm zero-shot head."""
    import open_clip

    from equiv.backbones.clip import ClipClassifier

    model = open_clip.create_model(arch, pretrained=None)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    width = model.text_projection.shape[1]
    head = torch.nn.functional.normalize(torch.randn(width, classes), dim=0)   # [D, C] columns
    return ClipClassifier(model.visual, head, 100.0, "logits"), int(size)


def build_backbone(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """A backbone and its input shape ``(C, H, W)``."""
    torch.manual_seed(0)
    if name == "small_cnn":
        from equiv.backbones import SmallCNN

        return SmallCNN(1, 10, 8), (1, 8, 8)
    if name == "small_resnet":
        from equiv.backbones import SmallResNet

        return SmallResNet(1, 10, width=8), (1, 28, 28)
    arch = {"clip_rn50": "RN50", "clip_vitb32": "ViT-B-32"}[name]
    model, size = clip_backbone(arch)
    return model, (3, size, size)


def interleaved_best(sides: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best time of each side over at least ``repeats`` rounds (more for fast sides: about 1 s
    in all), the sides interleaved within each round so that load on the machine hits all alike.
    The first round is a warm-up (allocator, lazy initialisation) and also sets the count."""
    first = max(timed(side)[0] for side in sides)
    rounds = max(repeats, min(200, int(1 / first)))
    times = [[timed(side)[0] for side in sides] for _ in range(rounds)]
    return [min(t[i] for t in times) for i in range(len(sides))]


@torch.no_grad()
def group_rows(name: str, backbone: nn.Module, x: Tensor, group: str,
               repeats: int) -> list[list[str]]:
    """One backbone × group: the floor and each wrapper on the untransformed batch."""
    from equiv.groups import image_group
    from equiv.methods import Equitune, Equizero

    action = image_group(group)
    views = action.act_in_all(x)                       # the floor's input, made beforehand
    wrappers = {"equitune": Equitune(backbone, action).eval(),
                "equizero": Equizero(backbone, action, "entropy").eval()}
    times = interleaved_best([lambda: backbone(views),
                              *(lambda m=m: m(x) for m in wrappers.values())], repeats)
    floor_mem = peak_rss_mb(lambda: backbone(views))
    rows = []
    for (label, model), wrapped in zip(wrappers.items(), times[1:], strict=True):
        mem = peak_rss_mb(lambda m=model: m(x))
        rows.append([name, group, label, f"{times[0] * 1e3:,.1f}", f"{wrapped * 1e3:,.1f}",
                     f"**{wrapped / times[0]:.3f}**", f"{floor_mem:,.0f} / {mem:,.0f}"])
    return rows


def symmetrization_rows(args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for name in args.images_backbones.split(","):
        backbone, shape = build_backbone(name)
        x = torch.randn(args.images_batch, *shape)
        for group in ("rot90", "d4"):
            rows += group_rows(name, backbone.eval(), x, group, args.images_repeats)
    return rows


def lambda_phase_rows(args: argparse.Namespace) -> tuple[list[list[str]], str]:
    """λ-only training for E epochs: features cached once vs the backbone run every epoch."""
    from equiv.backbones import SmallResNet
    from equiv.groups import rot90
    from equiv.methods import LambdaEquitune, LambdaNet

    torch.manual_seed(0)
    backbone = SmallResNet(1, 10, width=8).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    action = rot90()
    n, epochs, batch = args.images_lambda_images, args.images_lambda_epochs, 64
    x, y = torch.randn(n, 1, 28, 28), torch.randint(10, (n,))
    dim = backbone.features(x[:1]).shape[-1]

    def model() -> LambdaEquitune:
        torch.manual_seed(1)
        return LambdaEquitune(backbone, action, LambdaNet(dim), lambda_input="features")

    def train(step: Callable[[Tensor], Tensor], m: LambdaEquitune) -> int:
        opt = torch.optim.Adam(m.lambda_net.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=order).split(batch):
                loss = nn.functional.cross_entropy(step(idx), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return epochs * n * action.order

    recompute_model = model()
    recompute_s, recompute_passes = timed(lambda: train(
        lambda idx: recompute_model(x[idx]), recompute_model))

    cached_model = model()

    def cached_run() -> int:
        with torch.no_grad():
            feats = torch.cat([cached_model.stacked_features(part).view(
                action.order, len(part), -1).transpose(0, 1) for part in x.split(512)])
        train(lambda idx: cached_model.combine_features(
            feats[idx].transpose(0, 1).reshape(action.order * len(idx), -1)), cached_model)
        return n * action.order

    cached_s, cached_passes = timed(cached_run)
    same = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(
        cached_model.lambda_net.parameters(), recompute_model.lambda_net.parameters(),
        strict=True))
    rows = [["recomputed every epoch", f"{recompute_passes:,}", f"{recompute_s:.1f}", "1"],
            ["cached once (equiv)", f"{cached_passes:,}", f"{cached_s:.1f}",
             f"**{recompute_s / cached_s:.1f}×** faster"]]
    note = (f"Same λ-network weights after training on both sides: {same} (identical batches; "
            "the frozen backbone is in eval mode, so its features do not change).")
    return rows, note


def bench(args: argparse.Namespace) -> Section:
    rows = symmetrization_rows(args)
    lam_rows, lam_note = lambda_phase_rows(args)
    section = Section(
        "Images: symmetrized forward vs one backbone pass over all views; λ phase",
        settings=[f"batch {args.images_batch}, random-init backbones in eval mode, "
                  f"inference (no grad), CPU, {torch.get_num_threads()} thread(s); best of "
                  f"{args.images_repeats} (more for fast models) interleaved rounds after a "
                  "warm-up",
                  "floor: the backbone on the |G|·B transformed images in one call (the "
                  "transformed batch is made beforehand, so the floor excludes the permutation)",
                  "peak memory: the process's peak resident set (VmHWM, reset before each side)",
                  "target: ratio ≤ 1.05"],
        header=["backbone", "group", "method", "floor (ms)", "symmetrized (ms)", "ratio",
                "peak RSS floor / symmetrized (MB)"],
        rows=rows)
    section.notes = [
        "### λ phase: frozen features cached vs recomputed", "",
        f"SmallResNet (width 8) on {args.images_lambda_images:,} random 28×28 images × 4 "
        f"views (rot90), {args.images_lambda_epochs} epochs of λ-only training (Adam, batch 64).",
        "", "| side | backbone image passes | time (s) | speed-up |", "|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in lam_rows), "", lam_note]
    return section
