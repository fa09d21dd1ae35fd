"""Every experiment preset composes and validates in every cell of its sweep, and no two cells
(of one preset or of two presets) would write the same run directory."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from omegaconf import OmegaConf

from equiv.config import group_options, override_dirname
from equiv.errors import MissingResourceError
from equiv.runner import validate
from tests.helpers import CONFIG_DIR, compose_config

PRESETS = group_options(CONFIG_DIR, "experiment")
EXCLUDED = set(OmegaConf.load(CONFIG_DIR / "config.yaml").hydra.job.config.override_dirname
               .exclude_keys)


def sweep_cells(preset: str) -> list[dict[str, str]]:
    """The product of the preset's ``hydra.sweeper.params`` (comma-separated choices)."""
    params = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").hydra.sweeper.params
    keys = list(params)
    choices = [str(params[k]).split(",") for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def run_path(cell: dict[str, str]) -> str:
    """The run directory Hydra would give this cell (config.yaml's ``run_subdir``)."""
    kept = ",".join(sorted(f"{k}={v}" for k, v in cell.items() if k not in EXCLUDED))
    return f"{cell.get('task', '?')}/{cell['method']}/{override_dirname(kept)}/seed={cell['seed']}"


def test_there_are_presets_for_the_paper_and_offline_experiments():
    expected = {"scan", "digits", "fmnist", "clip_zeroshot", "clip_finetune", "cnn_cifar10"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_cell_of_a_preset_composes_and_validates(preset):
    cells = sweep_cells(preset)
    assert cells and all("method" in c and "seed" in c for c in cells)
    for cell in (c for c in cells if c["seed"] == cells[0]["seed"]):   # seeds compose alike
        cfg = compose_config(f"+experiment={preset}", *(f"{k}={v}" for k, v in cell.items()))
        assert cfg.exp_name != "default"            # the W&B group of the preset
        for key, value in cell.items():
            node = OmegaConf.select(cfg, f"{key}.name") if key in ("task", "method",
                                                                   "backbone") else None
            got = node if node is not None else OmegaConf.select(cfg, key)
            assert str(got).lower() == value.lower()        # YAML's true is Python's True
        with contextlib.suppress(MissingResourceError):   # weights/data absent on this machine
            validate(cfg)


def test_no_two_cells_share_a_run_directory():
    paths = []
    for preset in PRESETS:
        default_task = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").defaults[0]
        for cell in sweep_cells(preset):
            cell.setdefault("task", default_task["override /task"])
            paths.append(run_path(cell))
    assert len(set(paths)) == len(paths)
