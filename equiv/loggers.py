"""Experiment loggers: a no-op logger and a Weights & Biases logger that can never kill a run.

Tracking is a convenience; results.json is the source of truth. So every W&B failure (no
network, no key, library bug) degrades to a warning on stderr and a no-op logger.
"""

from __future__ import annotations

import inspect
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOGGER_NAMES = ("none", "wandb")


class RunLogger:
    """Interface for experiment trackers; the base implementation does nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record time-series metrics (e.g. per-epoch loss) at ``step``."""

    def log_summary(self, metrics: dict) -> None:
        """Record final, single-valued metrics for the run."""

    def finish(self) -> None:
        """Flush and close the tracker; safe to call more than once."""


class NullLogger(RunLogger):
    """Logger used when tracking is switched off."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _has_api_key() -> bool:
    """Whether W&B credentials exist (env vars or netrc), checked without contacting a server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        host = urlsplit(os.environ.get("WANDB_BASE_URL") or "").netloc or "api.wandb.ai"
        netrc_path = os.environ.get("NETRC")  # wandb honours this; the stdlib default does not
        auth = netrc.netrc(os.path.expanduser(netrc_path) if netrc_path else None)
        creds = auth.authenticators(host)
    except Exception:
        return False
    return bool(creds and creds[2])


def _reinit_value(init: Any) -> Any:
    """A ``reinit`` argument that starts a fresh run per call in this wandb version (or None).

    wandb >= 0.19.10 takes ``"finish_previous"``; older releases only a bool.
    """
    try:
        param = inspect.signature(init).parameters.get("reinit")
    except (TypeError, ValueError):
        return None
    if param is None:
        return None
    return "finish_previous" if "finish_previous" in str(param.annotation) else True


class WandbLogger(RunLogger):
    """Logs to W&B; offline when no API key is found, a no-op after any W&B error."""

    def __init__(
        self,
        project: str,
        entity: str | None,
        group: str | None,
        tags: list[str],
        config: dict,
        run_dir: Path,
        name: str | None,
        mode: str | None,
    ) -> None:
        self._run: Any = None
        self._warned = False
        try:
            import wandb

            init_kwargs: dict[str, Any] = {
                "project": project,
                "entity": entity,
                "group": group,
                "tags": list(tags),
                "config": config,
                "dir": str(run_dir),
                "name": name,
            }
            chosen = self._choose_mode(mode, run_dir)
            if chosen is not None:
                init_kwargs["mode"] = chosen
            reinit = _reinit_value(wandb.init)
            if reinit is not None:
                # Several runs in one process (sweeps, tests) must each get a fresh W&B run.
                init_kwargs["reinit"] = reinit
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self._run = self._init_or_offline(wandb, init_kwargs, run_dir)
        except Exception as exc:
            self._run = None
            self._warned = True
            _warn(
                f"W&B initialisation failed ({type(exc).__name__}: {exc}); continuing without W&B"
            )

    @staticmethod
    def _init_or_offline(wandb: Any, init_kwargs: dict[str, Any], run_dir: Path) -> Any:
        """``wandb.init``; if an online start fails (no network, server down), once more offline,
        so that the run is still recorded and can be synced later."""
        try:
            return wandb.init(**init_kwargs)
        except Exception as exc:
            if init_kwargs.get("mode") in ("offline", "disabled") or os.environ.get("WANDB_MODE"):
                raise
            _warn(f"W&B initialisation failed ({type(exc).__name__}: {exc}); logging offline "
                  f"instead. upload later with: wandb sync {Path(run_dir) / 'wandb'}/offline-run-*")
            return wandb.init(**{**init_kwargs, "mode": "offline"})

    @staticmethod
    def _choose_mode(mode: str | None, run_dir: Path) -> str | None:
        """WANDB_MODE wins (None lets wandb read it), then ``mode``, then offline if no key."""
        if os.environ.get("WANDB_MODE"):
            return None
        if mode:
            return mode
        if not _has_api_key():
            _warn(
                "no W&B API key found; logging offline. "
                f"upload later with: wandb sync {Path(run_dir) / 'wandb' / 'offline-run-*'}"
            )
            return "offline"
        return None

    @property
    def active(self) -> bool:
        """Whether a W&B run is live (False after a failure or finish)."""
        return self._run is not None

    def _fail(self, action: str, exc: Exception) -> None:
        self._run = None
        if not self._warned:
            self._warned = True
            _warn(f"W&B {action} failed ({type(exc).__name__}: {exc}); continuing without W&B")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._run is None:
            return
        try:
            self._run.log(dict(metrics), step=step)
        except Exception as exc:
            self._fail("log", exc)

    def log_summary(self, metrics: dict) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(metrics))
        except Exception as exc:
            self._fail("summary", exc)

    def finish(self) -> None:
        if self._run is None:
            return
        run, self._run = self._run, None
        try:
            run.finish()
        except Exception as exc:
            self._fail("finish", exc)


def make_logger(logger_cfg: Mapping, run_config: dict, run_dir: Path) -> RunLogger:
    """Build the logger named by ``logger_cfg["name"]`` for one run.

    ``name`` selects the logger type, so the W&B run name comes from ``run_name`` (None lets
    W&B pick one).
    """
    name = logger_cfg.get("name", "none")
    if name == "none":
        return NullLogger()
    if name == "wandb":
        tags = [str(t) for t in (logger_cfg.get("tags") or [])]
        for auto_tag in (run_config["task"]["name"], run_config["method"]["name"]):
            if str(auto_tag) not in tags:
                tags.append(str(auto_tag))
        group = logger_cfg.get("group")
        if group is None:
            group = run_config.get("exp_name")
        return WandbLogger(
            project=logger_cfg.get("project") or "equiv",
            entity=logger_cfg.get("entity"),
            group=group,
            tags=tags,
            config=run_config,
            run_dir=Path(run_dir),
            name=logger_cfg.get("run_name"),
            mode=logger_cfg.get("mode"),
        )
    raise ValueError(f"unknown logger {name!r}; valid names: {', '.join(LOGGER_NAMES)}")
