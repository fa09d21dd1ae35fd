"""CLIP through open_clip as a zero-shot image classifier with the ``features``/``head`` split.

``features(x)`` is the L2-normalised image embedding, ``head(f)`` the scaled cosine similarity to
the class text embeddings. The head is linear, so weighting the views' *features* (the paper's
CLIP λ-equitune, Fig. 1) and weighting their logits give the same output; ``LambdaEquitune``
with ``lambda_input='features'`` is therefore the paper's formula.

Pretrained weights are only ever read from ``cache_dir``: a missing file raises
``MissingResourceError`` (never a silent download or random substitute). Random weights need an
explicit ``pretrained=False``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equiv.errors import MissingResourceError
from equiv.pretraining import config_hash, exclusive, save_atomic

Output = Literal["logits", "probs"]
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_registered: dict[str, str] = {}


def register_model_config(name: str, config: Mapping[str, Any]) -> None:
    """Make a custom architecture (a dict in open_clip's JSON schema) known to open_clip."""
    import open_clip

    blob = json.dumps(dict(config), sort_keys=True)
    if _registered.get(name) == blob:
        return
    folder = Path(tempfile.mkdtemp(prefix="equiv-open-clip-"))
    (folder / f"{name}.json").write_text(blob)
    open_clip.add_model_config(folder)
    _registered[name] = blob


def pretrained_candidates(arch: str, tag: str, cache_dir: Path) -> list[Path]:
    """Where open_clip's own download (``cache_dir=...``) stores the weights of ``arch/tag``."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    out: list[Path] = []
    if cfg.get("hf_hub"):
        repo, filename = cfg["hf_hub"].rstrip("/"), None
        if repo.count("/") > 1:
            repo, filename = repo.rsplit("/", 1)
        snapshots = Path(cache_dir) / ("models--" + repo.replace("/", "--")) / "snapshots"
        out += [snapshots / "*" / name for name in ([filename] if filename else HF_WEIGHT_FILES)]
    if cfg.get("url"):
        out.append(Path(cache_dir) / Path(cfg["url"]).name)
    return out


def resolve_pretrained(arch: str, tag: str, cache_dir: Path, fetch: str) -> Path:
    """The local checkpoint of ``arch/tag``, or ``MissingResourceError`` naming where it looked."""
    candidates = pretrained_candidates(arch, tag, cache_dir)
    if not candidates:
        raise MissingResourceError(f"open_clip pretrained tag {arch}/{tag} (unknown to open_clip)",
                                   [], fetch)
    for candidate in candidates:
        if candidate.parent.name == "*":
            found = sorted(candidate.parent.parent.glob(f"*/{candidate.name}"))
            if found:
                return found[-1]
        elif candidate.is_file():
            return candidate
    raise MissingResourceError(f"open_clip weights {arch}/{tag}", candidates, fetch)


@dataclass
class LoadedClip:
    """An open_clip model with its evaluation preprocessing and tokenizer."""

    model: nn.Module
    preprocess: Callable[[Any], Tensor]
    tokenizer: Callable[[Sequence[str]], Tensor]
    checkpoint: Path | None


def load_clip(arch: str, *, pretrained: bool, tag: str | None, cache_dir: Path, fetch: str,
              quick_gelu: bool | None = None, model_config: Mapping[str, Any] | None = None,
              precision: str = "fp32") -> LoadedClip:
    """Build ``arch`` with open_clip; pretrained weights come from ``cache_dir`` only.

    ``quick_gelu=None`` follows the pretrained tag (OpenAI's weights were trained with QuickGELU,
    and open_clip's plain configs use GELU, which silently degrades them).
    """
    import open_clip

    if model_config is not None:
        register_model_config(arch, model_config)
    checkpoint = None
    if pretrained:
        if not tag:
            raise MissingResourceError(f"pretrained weights for {arch} (no tag given)", [], fetch)
        checkpoint = resolve_pretrained(arch, tag, cache_dir, fetch)
        if quick_gelu is None:
            quick_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    # OpenAI's original .pt files are TorchScript archives, which weights_only cannot read; they
    # are only ever the sha256-checked files open_clip downloaded from OpenAI.
    weights_only = checkpoint is None or checkpoint.suffix != ".pt"
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=str(checkpoint) if checkpoint else None,
        force_quick_gelu=bool(quick_gelu), precision=precision, weights_only=weights_only)
    return LoadedClip(model.eval(), preprocess, open_clip.get_tokenizer(arch), checkpoint)


@torch.no_grad()
def text_classifier(encode_text: Callable[[Tensor], Tensor],
                    tokenizer: Callable[[Sequence[str]], Tensor], classnames: Sequence[str],
                    templates: Sequence[str], device: torch.device | str = "cpu",
                    batch_size: int = 500) -> Tensor:
    """``[D, C]``: per class, the normalised mean of the normalised prompt embeddings.

    All prompts go through the text tower in batches (not one class at a time).
    """
    prompts = [t.format(c) for c in classnames for t in templates]
    tokens = tokenizer(prompts)
    emb = torch.cat([encode_text(chunk.to(device)).float() for chunk in tokens.split(batch_size)])
    emb = F.normalize(emb, dim=-1).view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1).T.contiguous()


def cached_text_classifier(cache_dir: Path, key: Mapping[str, Any],
                           compute: Callable[[], Tensor]) -> tuple[Tensor, bool, Path]:
    """``compute()`` once per ``key`` (model, tag, dataset, prompts hash, ...), then from disk.

    Returns ``(classifier, was_cached, path)``.
    """
    name = "-".join(str(key[k]) for k in ("arch", "tag", "dataset") if k in key)
    folder = Path(cache_dir) / "clip_text"
    path = folder / f"{name}-{config_hash(dict(key))}.pt"
    with exclusive(folder):
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True), True, path
        weights = compute().detach().cpu()
        save_atomic(weights, path)
    return weights, False, path


class ClipClassifier(nn.Module):
    """Zero-shot classifier: CLIP's image tower and a fixed ``[D, C]`` text classifier.

    ``logit_scale`` multiplies the cosine similarities (CLIP's learned scale, ~100 for OpenAI's
    weights; the authors' code used 1). ``output='probs'`` returns per-view softmax
    probabilities (the authors' code averages and trains on those).
    """

    def __init__(self, visual: nn.Module, classifier: Tensor, logit_scale: float,
                 output: Output = "logits") -> None:
        super().__init__()
        if output not in ("logits", "probs"):
            raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
        self.visual = visual
        self.register_buffer("classifier", classifier)
        self.logit_scale = float(logit_scale)
        self.output = output

    @property
    def feature_dim(self) -> int:
        return self.classifier.shape[0]

    def features(self, x: Tensor) -> Tensor:
        return F.normalize(self.visual(x.to(self.classifier.dtype)), dim=-1)

    def head(self, f: Tensor) -> Tensor:
        logits = self.logit_scale * (f @ self.classifier)
        return logits.softmax(dim=-1) if self.output == "probs" else logits

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
