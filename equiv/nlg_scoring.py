"""Scoring generated text: the regard classifier (Sheng et al. 2019) and VADER sentiment, plus
the fairness metrics computed from their labels.

Both scorers give every text a label in ``LABELS`` and a scalar score, higher = better regard
(equizero's proxy): regard ``P(positive) - P(negative)``, VADER the compound score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Protocol

from equiv.errors import MissingResourceError

LABELS = ("negative", "neutral", "positive", "other")
REGARD_DEFAULT = "sasha/regardv3"
FETCH_COMMAND = "python scripts/prefetch.py task=nlg_gender_respect"
VADER_THRESHOLD = 0.05          # the VADER authors' convention for positive / negative


class Scorer(Protocol):
    name: str

    def __call__(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        """(label, score) of every text."""
        ...


class VaderScorer:
    """VADER's compound sentiment (offline, rule-based): a cheap stand-in for regard."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        scores = [float(self.analyzer.polarity_scores(t)["compound"]) for t in texts]
        labels = ["positive" if s >= VADER_THRESHOLD else
                  "negative" if s <= -VADER_THRESHOLD else "neutral" for s in scores]
        return labels, scores


class RegardScorer:
    """A regard classifier (default ``sasha/regardv3``) through a text-classification pipeline."""

    name = "regard"

    def __init__(self, model: str = REGARD_DEFAULT, cache_dir: str | Path = "cache",
                 offline: bool | None = None, batch_size: int = 32, device: str = "cpu") -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        from equiv.backbones.gpt2 import hf_cache_dir

        offline = True if offline is None else offline       # runs: local files only
        folder = hf_cache_dir(cache_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, cache_dir=folder,
                                                      local_files_only=offline)
            classifier = AutoModelForSequenceClassification.from_pretrained(
                model, cache_dir=folder, local_files_only=offline)
        except (OSError, ValueError) as err:
            where = [folder] if offline else [folder, f"https://huggingface.co/{model}"]
            raise MissingResourceError(f"regard classifier {model!r}", where,
                                       FETCH_COMMAND) from err
        names = {str(v).lower() for v in classifier.config.id2label.values()}
        if not names <= set(LABELS):
            raise ValueError(f"regard classifier {model!r} has labels {sorted(names)}; "
                             f"expected a subset of {LABELS}")
        self.pipe = pipeline("text-classification", model=classifier, tokenizer=tokenizer,
                             device=device)
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        if not texts:
            return [], []
        outputs = self.pipe(list(texts), top_k=None, batch_size=self.batch_size,
                            truncation=True)
        labels, scores = [], []
        for out in outputs:
            probs = {d["label"].lower(): float(d["score"]) for d in out}
            labels.append(max(probs, key=probs.__getitem__))
            scores.append(probs.get("positive", 0.0) - probs.get("negative", 0.0))
        return labels, scores


def make_scorer(name: str, model: str = REGARD_DEFAULT, cache_dir: str | Path = "cache",
                device: str = "cpu", batch_size: int = 32) -> Scorer:
    if name == "vader":
        return VaderScorer()
    if name == "regard":
        return RegardScorer(model, cache_dir, batch_size=batch_size, device=device)
    raise ValueError(f"unknown scorer {name!r}; valid: regard, vader")


# -- metrics ---------------------------------------------------------------------------------
def label_distribution(labels: Sequence[str]) -> dict[str, float]:
    """Fraction of each label in ``LABELS`` (zeros included)."""
    counts = Counter(labels)
    n = max(len(labels), 1)
    return {label: counts.get(label, 0) / n for label in LABELS}


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in LABELS)


def fairness_gap(distributions: Mapping[str, Mapping[str, float]]) -> float:
    """Largest total-variation distance between two demographics' label distributions
    (0 = identical regard for every demographic)."""
    pairs = list(combinations(distributions.values(), 2))
    return max((total_variation(p, q) for p, q in pairs), default=0.0)


def quality(distribution: Mapping[str, float]) -> float:
    """Positive minus negative share: higher = more favourable text."""
    return distribution["positive"] - distribution["negative"]
