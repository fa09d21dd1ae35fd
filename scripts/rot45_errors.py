"""What interpolated 45° turns (``group=rot45``, task ``fmnist_rot45``) cost on real images.

    python scripts/rot45_errors.py                  # Fashion-MNIST test images, cached backbone
    python scripts/rot45_errors.py --images 64 --prior-steps 0    # quicker

Prints three Markdown tables (quoted in README.md, "Finer rotations"):

1. how far the C8 action is from a group action on the task's upright test images,
   ``|a(g, a(h, x)) − a(gh, x)|`` (pixels in [0, 1]), in float64 and float32, by kind of pair;
2. the zero-shot invariance error ``max |F(g·x) − F(x)|`` (logits) of every method around the
   pretrained ``small_resnet`` (seed 0's, from ``cache_dir``; random weights if it is not
   cached), over all eight elements and over the quarter turns alone, in float64 and float32,
   and the share of images whose predicted class is the same under all eight;
3. equiadapt's group CNN with 8 rotations (its filters warped by kornia) against the steerable
   canonicalizer, each trained ``--prior-steps`` steps on the prior alone: how often a test image
   turned by ``g`` is turned back by the canonicalizer (``g* = g⁻¹``), quarter turns vs odd
   elements.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from equiv.data.fashion_mnist import load_fashion_mnist_split  # noqa: E402
from equiv.groups import rot45  # noqa: E402
from equiv.testing import composition_error, equivariance_error  # noqa: E402
from equiv.training import accuracy  # noqa: E402

QUARTER_TURNS = (0, 2, 4, 6)


def composition_table(x: torch.Tensor) -> list[str]:
    action = rot45()
    rows = ["| dtype | max, odd∘odd | mean, odd∘odd | max, with a quarter turn |",
            "|---|---|---|---|"]
    for dtype in (torch.float64, torch.float32):
        z = action.act_in(x.to(dtype), 0)
        odd = [(action.act_in(action.act_in(z, h), g) - action.act_in(z, action.compose(g, h)))
               .abs() for g in (1, 3, 5, 7) for h in (1, 3, 5, 7)]
        exact = max(composition_error_pair(action, z, g, h) for g in range(8) for h in range(8)
                    if not (g % 2 and h % 2))
        worst = max(d.max().item() for d in odd)
        mean = torch.stack([d.mean() for d in odd]).mean().item()
        rows.append(f"| {str(dtype)[6:]} | {worst:.3f} | {mean:.4f} | {exact:.0e} |")
    assert composition_error(action, z) == worst          # the same measure as the protocol's
    return rows


def composition_error_pair(action, z: torch.Tensor, g: int, h: int) -> float:
    return (action.act_in(action.act_in(z, h), g)
            - action.act_in(z, action.compose(g, h))).abs().max().item()


def backbone(cache_dir: Path, seed: int) -> tuple[nn.Module, str]:
    """The task's pretrained backbone for ``seed`` if cached (the key ``fmnist_rot45`` runs
    use), else random weights."""
    from omegaconf import OmegaConf

    from equiv.backbones import SmallResNet
    from equiv.experiments.image_classification.protocol import (
        IMAGE_PRETRAIN_VERSION,
        _data_key,
    )
    from equiv.pretraining import backbone_key, config_hash

    cfg = OmegaConf.load(ROOT / "equiv" / "configs" / "backbone" / "small_resnet.yaml")
    task = OmegaConf.load(ROOT / "equiv" / "configs" / "task" / "fmnist_rot90.yaml").task
    pretrain = {**OmegaConf.to_container(task.pretrain), "seed": seed}
    key = {"dataset": "fashion_mnist", "data": _data_key(task.data),
           "backbone": backbone_key(OmegaConf.to_container(cfg)), "pretrain": pretrain,
           "image_code": IMAGE_PRETRAIN_VERSION}
    path = cache_dir / "pretrained" / f"fashion_mnist-small_resnet-{config_hash(key)}" / "model.pt"
    torch.manual_seed(seed)
    model = SmallResNet(1, 10, width=cfg.width, blocks=tuple(cfg.blocks))
    if not path.exists():
        return model.eval(), f"random weights ({path} not cached)"
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), str(path)


def methods(model: nn.Module, action) -> dict[str, nn.Module]:
    from equiv.methods import (
        Canonicalize,
        Equitune,
        Equizero,
        LambdaEquitune,
        LambdaNet,
        SteerableCanonicalizer,
        Vanilla,
    )

    torch.manual_seed(0)
    return {
        "vanilla": Vanilla(model),
        "equitune": Equitune(model, action),
        "lambda_equitune": LambdaEquitune(model, action, LambdaNet(model.feature_dim)),
        "equizero": Equizero(model, action, "neg_max_prob"),
        "canonicalize": Canonicalize(model, action, SteerableCanonicalizer(action, 1, seed=0)),
    }


def invariance_table(model: nn.Module, x: torch.Tensor) -> list[str]:
    action = rot45()
    rows = ["| method | all 8, float64 | quarter turns, float64 | all 8, float32 | quarter "
            "turns, float32 | same class under all 8 |", "|---|---|---|---|---|---|"]
    found: dict[str, list[str]] = {}
    for dtype in (torch.float64, torch.float32):
        for name, wrapped in methods(model.to(dtype), action).items():
            wrapped.to(dtype).eval()
            z = action.act_in(x.to(dtype), 0)
            found.setdefault(name, []).extend(
                f"{equivariance_error(wrapped, action, z, elements, invariant=True):.1e}"
                for elements in (None, QUARTER_TURNS))
            if dtype == torch.float32:
                with torch.no_grad():
                    classes = torch.stack([wrapped(action.act_in(z, g)).argmax(1)
                                           for g in action.elements])
                found[name].append(f"{(classes == classes[0]).all(0).double().mean():.3f}")
    rows += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in found.items()]
    return rows


def canonicalizer_table(split, steps: int, images: int) -> list[str]:
    from equiadapt.images.canonicalization_networks import CustomEquivariantNetwork

    from equiv.methods import SteerableCanonicalizer

    action = rot45()
    order = [(-k) % 8 for k in range(8)]        # equiadapt's and e2cnn's activation of k⁻¹

    class Equiadapt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = CustomEquivariantNetwork((1, 28, 28), 16, 5, "rotation", 8, 2, "cpu")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(action.act_in(x, 0))[:, order].T

    x = split.x_test[:images]
    g = torch.arange(len(x)) % 8
    turned = action.act_in(x, g)
    rows = ["| canonicalizer | seed | turned back: quarter turns | turned back: odd elements |",
            "|---|---|---|---|"]
    for name, make in (("equiadapt, 8 rotations (kornia-warped filters)", lambda s: Equiadapt()),
                       ("steerable (e2cnn)", lambda s: SteerableCanonicalizer(action, 1, seed=s))):
        for seed in range(2):
            torch.manual_seed(seed)
            net = make(seed)
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                scores = net(split.x_train[torch.randint(len(split.x_train), (64,),
                                                         generator=gen)])
                loss = F.cross_entropy(scores.T, torch.zeros(64, dtype=torch.long))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                right = torch.cat([net(part).argmax(0) for part in turned.split(128)]) == (-g) % 8
            rows.append(f"| {name} | {seed} | {right[g % 2 == 0].double().mean():.3f} | "
                        f"{right[g % 2 == 1].double().mean():.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--images", type=int, default=256, help="test images measured")
    parser.add_argument("--train-size", type=int, default=5000, help="for the prior training")
    parser.add_argument("--prior-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="whose pretrained backbone")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split = load_fashion_mnist_split(args.root, args.cache_dir, args.train_size, 2000, 0)
    x = split.x_test[: args.images]
    print(f"{len(x)} Fashion-MNIST test images (the task's seeded 2,000-image subset's first)\n")
    print("\n".join(composition_table(x)), "\n")
    model, source = backbone(args.cache_dir, args.seed)
    masked = rot45().act_in(split.x_test, 0)
    upright, cut = (accuracy(model, images, split.y_test, 500, torch.device("cpu"))
                    for images in (split.x_test, masked))
    print(f"backbone: {source}; accuracy on the {len(masked):,} upright test images {upright:.4f}, "
          f"masked to the disc {cut:.4f} (ink outside the disc: "
          f"{1 - masked.sum().item() / split.x_test.sum().item():.1%})\n")
    print("\n".join(invariance_table(model, x)), "\n")
    if args.prior_steps:
        print(f"prior phase: {args.prior_steps} Adam steps (lr 1e-2, batch 64), "
              f"{len(x)} test images\n")
        print("\n".join(canonicalizer_table(split, args.prior_steps, len(x))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
