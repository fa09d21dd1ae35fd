"""Zero-shot prompts: class names and templates from CLIP's public prompt lists (Radford et al.,
2021), the ones the authors used: 18 templates for CIFAR-10/100 (here), and for ImageNet
(ImageNet-V2 shares its classes) the 80 templates and 1,000 curated class names that open_clip
ships in ``open_clip.zero_shot_metadata`` (identical to the lists this module held before).

Templates contain one ``{}`` for the class name. Importable without torch: open_clip (whose
import loads torch) is imported only when ImageNet prompts are asked for.
"""

from __future__ import annotations

import hashlib
import json

CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

CIFAR10_CLASSNAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# CIFAR-100's fine labels in label order, underscores written as spaces (as CLIP's prompts do).
CIFAR100_CLASSNAMES: tuple[str, ...] = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow tree", "wolf", "woman", "worm",
)


def imagenet_prompts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ImageNet's ``(class names, templates)`` from open_clip, templates as ``{}`` strings."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return tuple(IMAGENET_CLASSNAMES), tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


def prompts_for(dataset: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(class names, templates)`` of a dataset: cifar10, cifar100, imagenet_v2 (or imagenet)."""
    if dataset == "cifar10":
        return CIFAR10_CLASSNAMES, CIFAR_TEMPLATES
    if dataset == "cifar100":
        return CIFAR100_CLASSNAMES, CIFAR_TEMPLATES
    if dataset in ("imagenet", "imagenet_v2"):
        return imagenet_prompts()
    raise ValueError(f"no prompts for dataset {dataset!r}; valid: cifar10, cifar100, imagenet_v2")


def prompts_hash(classnames: tuple[str, ...], templates: tuple[str, ...]) -> str:
    """Identifies a prompt set in cache keys: any change of a name or template changes it."""
    blob = json.dumps({"classnames": list(classnames), "templates": list(templates)})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
