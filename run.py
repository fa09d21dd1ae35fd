"""The single entry point: compose -> validate -> skip or run the task -> write results.

    python run.py                                  # task=digits_rot90 method=lambda_equitune
    python run.py task=digits_rot90 method=equizero seed=1
    python run.py -m method=vanilla,equitune,lambda_equitune,equizero seed=0,1,2

Bad input exits with code 2 and one line on stderr, before torch is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from equiv.config import ConfigError, check_group_overrides, register_resolvers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from equiv.runner import execute, format_summary

    try:
        report = execute(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        fail(str(err))
    print(format_summary(cfg, report), flush=True)


if __name__ == "__main__":
    register_resolvers()
    try:
        check_group_overrides(sys.argv[1:], CONFIG_DIR)
    except ConfigError as err:
        fail(str(err))
    main()
