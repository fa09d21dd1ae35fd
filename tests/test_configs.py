"""Every task × method × group composes and validates; bad combinations are refused clearly."""

import contextlib
import itertools

import pytest

from equiv.config import check_group_overrides, group_options
from equiv.errors import ConfigError, MissingResourceError
from equiv.runner import validate
from tests.helpers import CONFIG_DIR, compose_config

TASKS = group_options(CONFIG_DIR, "task")
METHODS = group_options(CONFIG_DIR, "method")


def validate_here(cfg):
    """Validation ends with a check that downloads (CLIP weights, CIFAR) are on disk; this
    machine has none, and refusing for that reason is a correct outcome for a valid config."""
    with contextlib.suppress(MissingResourceError):
        validate(cfg)


@pytest.mark.parametrize(("task", "method"), list(itertools.product(TASKS, METHODS)))
def test_every_task_and_method_composes_and_validates(task, method):
    cfg = compose_config(f"task={task}", f"method={method}")
    assert cfg.task.name == task and cfg.method.name == method
    if method == "canonicalize" and cfg.task.family == "nlg":
        with pytest.raises(ConfigError, match=r"^method=canonicalize does not run on NLG tasks; "
                                              r"it runs on the image_classification, clip, scan, "
                                              r"dqn tasks \(digits_rot90, .*clip_\*, scan_\*, "
                                              r"dqn_\*\)$"):
            validate_here(cfg)
        return
    validate_here(cfg)


@pytest.mark.parametrize("task", TASKS)
def test_every_compatible_group_validates(task):
    for group in compose_config(f"task={task}").task.compatible_groups:
        validate_here(compose_config(f"task={task}", f"group={group}"))


def test_default_is_digits_lambda_equitune():
    cfg = compose_config()
    assert (cfg.task.name, cfg.method.name, cfg.backbone.name, cfg.group.name) == (
        "digits_rot90", "lambda_equitune", "small_cnn", "rot90")


def test_equizero_proxy_defaults_to_the_task_proxy():
    cfg = compose_config("method=equizero")
    assert cfg.method.proxy == cfg.task.equizero_proxy == "neg_max_prob"
    assert compose_config("method=equizero", "method.proxy=entropy").method.proxy == "entropy"


def test_command_line_group_overrides_the_task_default():
    assert compose_config("group=d4").group.name == "d4"
    assert compose_config("backbone=tiny_cnn").backbone.channels == [4]


@pytest.mark.parametrize(("argv", "message"), [
    (["group=nonsense"],
     "unknown group 'nonsense'; valid group options: acrobot_reflect, cartpole_reflect, d4, "
     "grid_rot90, hflip"),
    (["task=nope"], "unknown task 'nope'"),
    (["method=vanilla,nope"], "unknown method 'nope'"),
    (["backbone=resnet9000"], "unknown backbone"),
    (["logger=tensorboard"], "unknown logger"),
    (["seed=[1"], "cannot parse"),
])
def test_unknown_group_options_are_refused_before_composition(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_group_overrides(argv, CONFIG_DIR)


def test_known_options_and_sweeps_pass_the_precheck():
    check_group_overrides(["-m", "method=vanilla,equitune", "seed=0,1", "group=d4"], CONFIG_DIR)


@pytest.mark.parametrize(("overrides", "message"), [
    (["task.finetune.steps=-1"], "task.finetune.steps=-1 is not valid: an integer >= 0"),
    (["task.finetune.lr=0"], "task.finetune.lr=0 is not valid: a finite number > 0"),
    (["task.finetune.lr=fast"], "task.finetune.lr='fast' must be a number"),
    (["method=lambda_equitune", "method.lambda_phase.steps=-5"], "an integer >= 0"),
    (["method=equizero", "method.proxy=accuracy"], "method.proxy='accuracy' is not valid"),
    (["method=lambda_equitune", "method.normalization=relu"], "method.normalization"),
    (["seed=abc"], "seed='abc' must be an integer"),
    (["task.eval.transform_mode=sometimes"], "task.eval.transform_mode"),
])
def test_bad_values_fail_validation(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(*overrides))


def test_group_that_does_not_fit_the_task():
    cfg = compose_config()
    cfg.task.compatible_groups = ["rot90"]
    cfg.group.name = "d4"
    with pytest.raises(ConfigError, match="group=d4 does not fit task digits_rot90; valid "
                                          "groups: rot90"):
        validate(cfg)


def test_a_task_can_set_top_level_keys():
    """``_self_`` comes first in config.yaml, so the SCAN tasks' ``cpu_threads: 1`` wins."""
    assert compose_config("task=scan_add_jump").cpu_threads == 1
    assert compose_config("task=scan_add_jump", "cpu_threads=2").cpu_threads == 2
    assert compose_config().cpu_threads is None


def test_long_override_lists_get_short_unique_directory_names():
    from equiv.config import MAX_DIRNAME, override_dirname

    assert override_dirname("") == "default"
    assert override_dirname("seed=1,x=2") == "seed=1,x=2"
    long_a, long_b = "a=1," * 80 + "b=1", "a=1," * 80 + "b=2"
    names = {override_dirname(long_a), override_dirname(long_b)}
    assert len(names) == 2 and all(len(n) <= MAX_DIRNAME for n in names)
    assert override_dirname(long_a) == override_dirname(long_a)


def test_composition_check_refuses_unknown_keys_but_leaves_hydra_settings_to_hydra():
    from equiv.config import check_composes

    check_composes(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "method=vanilla,equizero", "seed=0,1"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"Could not override 'task\.nope'"):
        check_composes(["-m", "method=vanilla,equizero", "task.nope=1"], CONFIG_DIR)
