"""Where the NLG family's downloads live, checked without importing torch or transformers.

Runs read GPT-2 and the regard classifier only from ``<cache_dir>/huggingface`` (the layout of
transformers' ``from_pretrained(..., cache_dir=...)``); ``scripts/prefetch.py`` downloads them.
A run never contacts the hub, so an offline machine fails at once with the fetch command
instead of retrying a connection.
"""

from __future__ import annotations

from pathlib import Path

from equiv.errors import MissingResourceError


def hub_snapshots(cache_dir: str | Path, repo: str) -> Path:
    return Path(cache_dir) / "huggingface" / ("models--" + repo.replace("/", "--")) / "snapshots"


def require_hub_model(repo: str, what: str, cache_dir: str | Path, fetch: str) -> None:
    """Raise ``MissingResourceError`` unless a snapshot of ``repo`` with a config is on disk."""
    snapshots = hub_snapshots(cache_dir, repo)
    if not any(snapshots.glob("*/config.json")):
        raise MissingResourceError(f"{what} {repo!r}", [snapshots], fetch)
