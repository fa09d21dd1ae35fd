"""Run one composed config: validate, skip if complete, run the task, write results atomically.

``run.py`` is a thin Hydra wrapper around ``execute``; tests call ``execute`` in-process.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from equiv.config import validate as validate_common
from equiv.errors import ConfigError


@dataclass
class RunReport:
    """What happened: skipped (already complete) or ran, where the results are, what to print."""

    results_path: Path
    skipped: bool
    summary: list[tuple[str, str]]
    wall_time_s: float = 0.0


def limit_cpu_threads(n: int) -> None:
    """Limit torch's (and MKL's OpenMP) threads to ``n``.

    The environment variables only take effect before torch is first imported, which is why
    ``run.py`` imports torch lazily: ``torch.set_num_threads`` alone leaves MKL's batched-GEMM
    OpenMP team in place, and on a busy 2-core machine its spinning workers slowed seq2seq
    training ~20x.
    """
    import sys

    if "torch" not in sys.modules:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def validate(cfg: DictConfig) -> None:
    """All checks before heavy work; raises ``ConfigError`` (or ``ValueError``). Last, the
    classes the config names are imported (which imports torch) and checked against its keys."""
    from equiv.experiments import family_module
    from equiv.instantiate import check_targets

    validate_common(cfg)
    family_module(cfg.task.family).validate(cfg)
    check_targets(cfg)


def execute(cfg: DictConfig, run_dir: Path) -> RunReport:
    """Validate, then run ``cfg`` into ``run_dir`` unless a complete result is already there.

    The run directory is locked for the whole run (a second job on it fails fast with
    ``RunDirBusyError``), and a complete result written by a *different* config is refused
    (``ConfigError``) rather than skipped or overwritten, unless ``force=true``. Starting a run
    removes any earlier results.json first, so an interrupted run never leaves one behind.
    """
    threads = cfg.get("cpu_threads")
    if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0:
        limit_cpu_threads(threads)          # before validation imports torch (the targets)
    validate(cfg)
    from equiv.checkpoints import config_differences, run_dir_lock
    from equiv.results import RESULTS_FILE, is_complete, read_results

    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    with run_dir_lock(run_dir):
        if is_complete(run_dir) and not cfg.force:
            previous = read_results(run_dir) or {}
            diff = config_differences(previous.get("config") or {}, plain)
            if diff:
                shown = ", ".join(diff[:4]) + (", ..." if len(diff) > 4 else "")
                raise ConfigError(f"{run_dir / RESULTS_FILE} holds the result of a different "
                                  f"config ({shown} differ); use another output_root, or "
                                  "force=true to replace it")
            return RunReport(run_dir / RESULTS_FILE, skipped=True, summary=[])
        (run_dir / RESULTS_FILE).unlink(missing_ok=True)
        return _run(cfg, plain, run_dir)


def _run(cfg: DictConfig, plain: dict, run_dir: Path) -> RunReport:
    from equiv.experiment import RunContext
    from equiv.experiments import family_module
    from equiv.loggers import make_logger
    from equiv.results import build_results, write_results
    from equiv.training import resolve_device

    started = time.time()
    device = resolve_device(cfg.device)
    logger = make_logger(cfg.logger, plain, run_dir)
    ctx = RunContext(run_dir=run_dir, cache_dir=Path(cfg.cache_dir), device=device,
                     logger=logger, seed=cfg.seed)
    try:
        outcome = family_module(cfg.task.family).run(cfg, ctx)
        wall = time.time() - started
        results = build_results(config=plain, metrics=outcome.metrics, curves=outcome.curves,
                                started_at=started, wall_time_s=wall, device=str(device),
                                extra=outcome.extra)
        path = write_results(run_dir, results)
        logger.log_summary({k: v for k, v in outcome.metrics.items() if v is not None})
    finally:
        logger.finish()
    return RunReport(path, skipped=False, summary=outcome.summary, wall_time_s=wall)


def format_summary(cfg: DictConfig, report: RunReport) -> str:
    head = (f"{cfg.task.name} · {cfg.method.name} · {cfg.backbone.name} · group {cfg.group.name}"
            f" · seed {cfg.seed}")
    if report.skipped:
        return f"skip: {head}: {report.results_path} is complete (force=true reruns it)"
    width = max([len(label) for label, _ in report.summary] + [20])
    lines = [head, *(f"  {label:<{width}}  {value}" for label, value in report.summary),
             f"results: {report.results_path}  ({report.wall_time_s:.1f} s)"]
    return "\n".join(lines)
