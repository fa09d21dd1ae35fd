"""The single entry point: compose -> validate -> skip or run the task -> write results.

    equiv-run                                      # task=digits_rot90 method=lambda_equitune
    equiv-run task=digits_rot90 method=equizero seed=1
    equiv-run -m method=vanilla,equitune,lambda_equitune,equizero seed=0,1,2

(``python run.py ...`` in a checkout does the same.) It works from any working directory: the
configs are found next to the package and the task function is importable (``equiv.cli.main``),
so launchers that pickle it (submitit, joblib) run it anywhere.

Bad input, Hydra's own command-line errors included, exits with code 2 and one line on stderr,
before torch is imported. Runtime faults (an unreadable checkpoint, a non-finite loss, the run
directory in use by another job) exit with code 1 and one line on stderr, no traceback; in a
sweep (``-m``) such a fault ends only its own job: the others still run, and the sweep exits
with code 1 at the end.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from equiv.config import check_composes, check_group_overrides, register_resolvers
from equiv.errors import ConfigError, RunFault

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2
SWEEP_FAULTS: list[str] = []        # runtime faults of a sweep's jobs, reported at its end

# Hydra's command-line flags (``python run.py --help``); those with a value take the next word.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                    "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
FLAGS = {"--help", "-h", "--hydra-help", "--version", "--resolve", "--run", "-r", "--multirun",
         "-m", "--shell-completion", "-sc", *FLAGS_WITH_VALUE}


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_flags(argv: Sequence[str]) -> None:
    """Refuse an unknown flag in one line (argparse would print its usage block)."""
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and flag not in FLAGS:
            raise ConfigError(f"unknown option {flag}; valid: {', '.join(sorted(FLAGS))}")


def describe_fault(err: BaseException) -> str:
    """A runtime fault in words: an OS error (a full disk, a path that vanished or cannot be
    written) as what failed and where, without the exception's class name."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return (f"I/O error ({err.strerror}){where}; completed checkpoints are kept, and the "
                "same command resumes from the last one")
    return str(err)


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


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def run_task(cfg: DictConfig) -> None:
    """One job: a single run, or one cell of a sweep."""
    from equiv.runner import execute, format_summary

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = execute(cfg, run_dir)
    except ConfigError as err:
        remove_if_untouched(run_dir, Path(cfg.output_root))
        fail(str(err))
    except (RunFault, OSError) as err:     # unreadable checkpoint, non-finite loss, busy dir, I/O
        message = " ".join(describe_fault(err).split())   # one line, whatever the cause says
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            fail(message, EXIT_FAULT)
        where = "" if str(run_dir) in message else f"{run_dir}: "
        print(f"error: {where}{message}", file=sys.stderr, flush=True)
        SWEEP_FAULTS.append(str(run_dir))
        return
    print(format_summary(cfg, report), flush=True)


def main() -> None:
    """Check the command line (torch-free), then hand over to Hydra."""
    register_resolvers()
    argv = sys.argv[1:]
    try:
        check_flags(argv)
        check_group_overrides(argv, CONFIG_DIR)
        check_composes(argv, CONFIG_DIR)
    except ConfigError as err:
        fail(str(err))
    run_task()
    if SWEEP_FAULTS:
        fail(f"{len(SWEEP_FAULTS)} sweep job(s) failed, see above", EXIT_FAULT)


if __name__ == "__main__":
    main()
