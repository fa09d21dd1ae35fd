"""The single entry point: compose -> validate -> skip or run the task -> write results.

    equiv-run                                      # task=digits_rot90 method=lambda_equitune
    equiv-run task=digits_rot90 method=equizero seed=1
    equiv-run -m method=vanilla,equitune,lambda_equitune,equizero seed=0,1,2

(``python run.py ...`` in a checkout does the same.) It works from any working directory: the
configs are part of the package (``equiv/configs``) and the task function is importable
(``equiv.cli.main``), so launchers that pickle it (submitit, joblib) run it anywhere.

Bad input, Hydra's own command-line errors included, exits with code 2 and one line on stderr,
before torch is imported. Runtime faults (an unreadable checkpoint, a non-finite loss, the run
directory in use by another job) exit with code 1 and one line on stderr, no traceback; in a
sweep (``-m``) such a fault ends only its own job: the others still run, and at the end the
sweep prints one line per failed job (naming its run directory) and exits with code 1. That
works with every launcher (basic, joblib, submitit: jobs in other processes or on other
machines): a failed job leaves its line in a folder of the sweep's own under ``output_root``
(``EQUIV_SWEEP_FAULTS``), which the sweep reads and removes when its jobs are done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from equiv.config import CONFIG_DIR, check_composes, check_group_overrides, register_resolvers
from equiv.errors import ConfigError, RunFault

EXIT_FAULT = 1
EXIT_BAD_INPUT = 2
SWEEP_FAULTS = "EQUIV_SWEEP_FAULTS"      # the folder where a sweep's failed jobs leave their line

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
    """A runtime fault in words. Failed writes are ``WriteError``s, which say what the failure
    costs; any other OS error (a read, a listing) says only what failed and where, without the
    exception's class name."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        return f"I/O error ({err.strerror}){where}"
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
        record_sweep_fault(f"{where}{message}")
        return
    print(format_summary(cfg, report), flush=True)


def record_sweep_fault(line: str) -> None:
    """Leave a failed sweep job's line for the sweep to report (printed here if it cannot be:
    the fault may be a full disk)."""
    folder = os.environ.get(SWEEP_FAULTS)
    try:
        if folder is None:
            raise OSError("no sweep folder")
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{HydraConfig.get().job.num}.txt").write_text(line + "\n")
    except OSError:
        print(f"error: {line}", file=sys.stderr, flush=True)


def collect_sweep_faults(folder: Path) -> list[str]:
    """The lines the sweep's failed jobs left, in job order; the folder is removed."""
    files = sorted(folder.glob("*.txt"), key=lambda p: int(p.stem)) if folder.is_dir() else []
    lines = [p.read_text().strip() for p in files]
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):          # not empty: another sweep's, still running
        folder.parent.rmdir()
    return lines


def main() -> None:
    """Check the command line (torch-free), then hand over to Hydra."""
    register_resolvers()
    argv = sys.argv[1:]
    try:
        check_flags(argv)
        check_group_overrides(argv, CONFIG_DIR)
        cfg = check_composes(argv, CONFIG_DIR)
    except ConfigError as err:
        fail(str(err))
    if not any(a in ("-m", "--multirun") for a in argv):
        run_task()
        return
    faults = Path(cfg.output_root).resolve() / ".sweep-faults" / uuid.uuid4().hex
    os.environ[SWEEP_FAULTS] = str(faults)          # inherited by every launcher's jobs
    try:
        run_task()
    finally:
        failed = collect_sweep_faults(faults)
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
    if failed:
        fail(f"{len(failed)} sweep job(s) failed", EXIT_FAULT)


if __name__ == "__main__":
    main()
