"""Config checks that run before any heavy work, and the resolvers the config tree uses.

Errors are ``ConfigError``: ``run.py`` prints them as one line and exits with code 2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from equiv.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"   # package data: installs carry it
CONFIG_GROUPS = ("task", "method", "backbone", "group", "logger", "experiment")
DEVICES = ("cpu", "cuda", "mps")


MAX_DIRNAME = 120


def override_dirname(overrides: str, default: str = "default") -> str:
    """A directory name for a run's overrides: readable, unique, and short enough for any
    file system (names are limited to 255 bytes); long ones keep a prefix and a hash."""
    if not overrides:
        return default
    if len(overrides) <= MAX_DIRNAME:
        return overrides
    import hashlib

    digest = hashlib.sha256(overrides.encode()).hexdigest()[:10]
    return f"{overrides[: MAX_DIRNAME - 20]}...{digest}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dirname"):
        OmegaConf.register_new_resolver("run_dirname", override_dirname)


def group_options(config_dir: Path, group: str, argv: Sequence[str] = ()) -> list[str]:
    """The options of ``group`` in ``config_dir`` and in the user's ``--config-dir``s."""
    dirs = [config_dir, *user_config_dirs(argv)]
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


def user_config_dirs(argv: Sequence[str]) -> list[Path]:
    """The folders given with Hydra's ``--config-dir``/``-cd``: searched after the package's
    configs, so that a user's own ``task/<name>.yaml`` (or method, backbone, ...) is an option."""
    dirs = []
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            folder = Path(value).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"{flag} {value} is not valid: a directory of configs "
                                  "(e.g. task/<name>.yaml)")
            dirs.append(folder.resolve())
    return dirs


def _choices(value: object) -> list[str]:
    """The option names an override value asks for (a sweep ``a,b`` asks for several)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, RangeSweep

    if isinstance(value, ChoiceSweep):
        return [str(v) for v in value.list]
    if isinstance(value, Glob | RangeSweep):
        return []
    return [] if value is None else [str(value)]


def check_group_overrides(argv: Sequence[str], config_dir: Path) -> None:
    """Reject unknown config-group options before Hydra composes (and before torch loads)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = parser.parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"cannot parse the command line: {str(err).splitlines()[0]}") from err
    for ov in overrides:
        group = ov.key_or_group.split("/")[-1] if "/" in ov.key_or_group else ov.key_or_group
        if ov.key_or_group not in CONFIG_GROUPS or ov.is_delete():
            continue
        valid = group_options(config_dir, group, argv)
        for choice in _choices(ov.value()):
            if choice not in valid:
                raise ConfigError(f"unknown {group} {choice!r}; valid {group} options: "
                                  f"{', '.join(valid)}")


def hydra_message(text: str) -> str:
    """Hydra's multi-line report in one line: its first two lines, and the options it lists
    (``Available options in 'hydra/launcher': basic, joblib``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = " ".join(lines[:2])
    if len(lines) > 1 and lines[1].startswith("Available options"):
        options = []
        for line in lines[2:]:
            if line.endswith(":"):                  # "Config search path:" and what follows
                break
            options.append(line)
        message = f"{lines[0]}; {lines[1][:-1]}: {', '.join(options)}"
    return message


def check_composes(argv: Sequence[str], config_dir: Path) -> DictConfig:
    """Compose the config once (a sweep's first cell) before Hydra runs, so that an unknown key
    or a value that does not fit its node fails with one line instead of Hydra's report; then
    check it against the typed schemas (``equiv.schemas``: keys added with ``+`` and wrong
    types), which ``validate`` repeats for every job of a sweep. Returns that config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    multirun = any(a in ("-m", "--multirun") for a in argv)
    extra = user_config_dirs(argv)
    cell = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in extra)}]"] if extra else []
    for ov in OverridesParser.create().parse_overrides(
            [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]):
        if ov.is_sweep_override() and not multirun:
            raise ConfigError(f"{ov.input_line} is a sweep: add -m to run each value, or write "
                              f"{ov.get_key_element()}=[...] for a list")
        if ov.is_delete():                                           # ~key (~key=value)
            cell.append(ov.input_line)
        elif isinstance(ov.value(), ChoiceSweep):
            first = ov._get_value_element_as_str(ov.value().list[0])   # null stays null
            cell.append(f"{ov.get_key_element()}={first}")
        elif not ov.is_sweep_override():
            cell.append(f"{ov.get_key_element()}={ov.get_value_element_as_str()}")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=cell, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = hydra_message(str(err))
        cause = err.__cause__
        if cause is not None and str(cause).strip():
            message += f" ({str(cause).splitlines()[0]})"
        raise ConfigError(message) from err
    with open_dict(cfg):
        del cfg["hydra"]                      # composed only to check Hydra's own overrides
    check_schemas(cfg)
    return cfg


def one_of(value: object, valid: Sequence[str], key: str) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid: {', '.join(valid)}")


def validate_method_options(method: DictConfig, proxies: Sequence[str], family: str,
                            lambda_inputs: Sequence[str] = ("features",),
                            surrogates: Sequence[str] | None = None) -> None:
    """The λ-equitune and equizero options a task family accepts (torch-free); ``surrogates``
    defaults to the straight-through ones every family supports."""
    from equiv.method_options import NORMALIZATIONS, SURROGATES

    if method.name == "lambda_equitune":
        one_of(method.normalization, NORMALIZATIONS, "method.normalization")
        if method.lambda_input not in lambda_inputs:
            raise ConfigError(f"method.lambda_input={method.lambda_input!r} is not valid for "
                              f"{family}; valid: {', '.join(lambda_inputs)}")
    if method.name == "equizero":
        one_of(method.proxy, proxies, "method.proxy")
        one_of(method.surrogate, SURROGATES if surrogates is None else surrogates,
               "method.surrogate")
    validate_canonicalize(method, family)


def validate_canonicalize(method: DictConfig, family: str) -> None:
    """``method=canonicalize`` only where a protocol trains a canonicalizer."""
    from equiv.method_options import CANONICALIZE_FAMILIES, CANONICALIZE_GRADIENTS

    if method.name != "canonicalize":
        return
    if family.lower() not in CANONICALIZE_FAMILIES or method.get("canonicalizer") is None:
        raise ConfigError(f"method=canonicalize does not run on {family} tasks; it runs on the "
                          f"{', '.join(CANONICALIZE_FAMILIES)} tasks (digits_rot90, "
                          "fmnist_rot90, fmnist_rot45, cnn_cifar10_rot90, clip_*, scan_*, dqn_*)")
    one_of(method.gradient, CANONICALIZE_GRADIENTS, "method.gradient")


def phase_steps(method: DictConfig) -> int:
    """Steps of the method's phases on training data (0: it needs none before finetuning)."""
    from equiv.method_options import METHOD_PHASES

    return sum(method[p].steps for p in METHOD_PHASES.get(method.name, ()))


def check_schemas(cfg: DictConfig) -> None:
    """Each group node of ``cfg`` against its typed schema (imported here: no import cycle)."""
    from equiv.schemas import check_schemas as check

    check(cfg)


def check_checkpoint(backbone: DictConfig) -> None:
    """``backbone.checkpoint`` only for a backbone that is pretrained (that it is a readable
    file, the schema checks)."""
    path = backbone.get("checkpoint")
    if path is not None and not backbone.get("pretrained", True):
        raise ConfigError(f"backbone.checkpoint={path} contradicts backbone.pretrained=false "
                          "(random initialisation); drop one of them")


def validate(cfg: DictConfig) -> None:
    """Checks common to every task; the task family's ``validate`` adds its own. First the typed
    schemas (``equiv.schemas``: types, ranges, paths): every job of a sweep, not only the cell
    ``check_composes`` saw."""
    from equiv.instantiate import is_suite_target

    check_schemas(cfg)
    compatible = list(cfg.task.get("compatible_groups") or [])
    # A group of one's own (a ``_target_`` outside the suite) is the user's to fit to the task.
    if compatible and is_suite_target(cfg.group) and cfg.group.name not in compatible:
        raise ConfigError(f"group={cfg.group.name} does not fit task {cfg.task.name}; valid "
                          f"groups: {', '.join(compatible)}")
    check_checkpoint(cfg.backbone)
    if cfg.device != "auto" and not re.fullmatch(rf"({'|'.join(DEVICES)})(:\d+)?", str(cfg.device)):
        raise ConfigError(f"device={cfg.device!r} is not valid; valid: auto, "
                          f"{', '.join(DEVICES)} (optionally with an index, e.g. cuda:1)")


IMAGE_GROUPS = ("rot45", "rot90", "rot180", "hflip", "d4", "trivial")
TRANSFORM_MODES = ("per_example", "per_batch")


def validate_image_task(cfg: DictConfig, datasets: Sequence[str],
                        backbones: Sequence[str]) -> None:
    """The checks every image-classification family shares (torch-free): dataset, a backbone
    that fits the task, the test-time transformation group and how it is drawn."""
    from equiv.instantiate import is_suite_target

    task, backbone = cfg.task, cfg.backbone
    one_of(task.dataset, datasets, "task.dataset")
    if is_suite_target(backbone) and backbone.name not in backbones:
        raise ConfigError(f"backbone {backbone.name!r} does not fit task {task.name}; valid "
                          f"backbones: {', '.join(backbones)}")
    one_of(task.transform, IMAGE_GROUPS, "task.transform")
    one_of(task.eval.transform_mode, TRANSFORM_MODES, "task.eval.transform_mode")
