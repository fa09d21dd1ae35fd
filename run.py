"""The single entry point: compose -> validate -> skip or run the task -> write results.

    python run.py                                  # task=digits_rot90 method=lambda_equitune
    python run.py task=digits_rot90 method=equizero seed=1
    python run.py -m method=vanilla,equitune,lambda_equitune,equizero seed=0,1,2

Bad input exits with code 2 and one line on stderr, before torch is imported. Runtime faults (an
unreadable checkpoint, a non-finite loss, the run directory in use by another job) exit with
code 1 and one line on stderr, no traceback; in a sweep (``-m``) such a fault ends only its own
job: the others still run, and the sweep exits with code 1 at the end.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from equiv.config import check_composes, check_group_overrides, register_resolvers
from equiv.errors import ConfigError, RunFault

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2
SWEEP_FAULTS: list[str] = []        # runtime faults of a sweep's jobs, reported at its end


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def remove_if_untouched(run_dir: Path, output_root: Path) -> None:
    """Hydra creates the run directory before we can validate; leave no trace of a refused run."""
    hydra_files = {".hydra", ".lock", f"{HydraConfig.get().job.name}.log"}
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= hydra_files:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    root = output_root.resolve()
    for parent in run_dir.resolve().parents:    # and the folders it emptied, below output_root
        if parent == root or root not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from equiv.runner import execute, format_summary

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = execute(cfg, run_dir)
    except ConfigError as err:
        remove_if_untouched(run_dir, Path(cfg.output_root))
        fail(str(err))
    except RunFault as err:             # unreadable checkpoint, non-finite loss, busy run dir
        message = " ".join(str(err).split())              # one line, whatever the cause says
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            fail(message, EXIT_FAULT)
        where = "" if str(run_dir) in message else f"{run_dir}: "
        print(f"error: {where}{message}", file=sys.stderr, flush=True)
        SWEEP_FAULTS.append(str(run_dir))
        return
    print(format_summary(cfg, report), flush=True)


if __name__ == "__main__":
    register_resolvers()
    try:
        check_group_overrides(sys.argv[1:], CONFIG_DIR)
        check_composes(sys.argv[1:], CONFIG_DIR)
    except ConfigError as err:
        fail(str(err))
    main()
    if SWEEP_FAULTS:
        fail(f"{len(SWEEP_FAULTS)} sweep job(s) failed, see above", EXIT_FAULT)
