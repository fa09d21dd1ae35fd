"""Typed config schemas (``equiv.schemas``): every yaml fits its schema, and schemas hold no key
that no yaml or code uses; unknown keys and wrong types are refused with the key's path, in
``validate`` (every job) and in ``check_composes`` (before Hydra runs)."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import typing

import pytest
from omegaconf import DictConfig, OmegaConf

from equiv import constraints, schemas
from equiv.config import check_composes, group_options, validate
from equiv.errors import ConfigError
from equiv.rl.config import DQNConfig
from equiv.schemas import check_schemas, schemas_for
from tests.helpers import CONFIG_DIR, TINY, compose_config
from tests.test_presets import sweep_cells

TASKS = group_options(CONFIG_DIR, "task")
METHODS = group_options(CONFIG_DIR, "method")
PRESETS = group_options(CONFIG_DIR, "experiment")
GROUPS = ("backbone", "group", "logger")

# Keys a schema may declare although no yaml sets them: the code reads them with a default
# (a user adds them with ``+``). Anything else in a schema but in no yaml is a stale key.
CODE_ONLY = {
    "DQNConfig": {"huber_delta", "max_grad_norm", "eval_at_start"},     # the trainer's defaults
    "ImageFinetune": {"checkpoint_every"},                             # default eval_every
}


def every_config() -> list[DictConfig]:
    """Every yaml of every group composed at least once: every task with its default backbone
    and group, every method with one task of each family (CLIP and the CIFAR-10 CNNs set
    λ-equitune's keys for every method), and each backbone, group and logger option."""
    cfgs = [compose_config(f"task={t}") for t in TASKS]
    one_per_family = ("digits_rot90", "cnn_cifar10_rot90", "clip_rot90", "scan_add_jump",
                      "dqn_gridworld", "nlg_race_respect")
    cfgs += [compose_config(f"task={t}", f"method={m}") for t in one_per_family for m in METHODS]
    cfgs += [compose_config(f"{g}={o}") for g in GROUPS for o in group_options(CONFIG_DIR, g)]
    return cfgs


@pytest.fixture(scope="module")
def configs() -> list[DictConfig]:
    return every_config()


def test_every_yaml_fits_its_schema(configs):
    started = time.process_time()       # CPU time: a busy machine does not stretch it
    for cfg in configs:
        check_schemas(cfg)
    assert (time.process_time() - started) / len(configs) < 0.05     # cheap for every job


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits(preset):
    """The first and last cell of each preset's sweep (tests/test_presets.py validates every
    cell, which runs the same schema check)."""
    cells = sweep_cells(preset)
    for cell in (cells[0], cells[-1]):
        check_schemas(compose_config(f"+experiment={preset}",
                                     *(f"{k}={v}" for k, v in cell.items())))


def test_test_budgets_fit():
    """The tests' tiny budgets add ``++method.lambda_phase.*`` for every method."""
    for method in METHODS:
        check_schemas(compose_config(*TINY, f"method={method}"))


def schema_keys(cls: type) -> set[tuple[str, str]]:
    """(schema class name, key) for every field of ``cls`` and of the schemas nested in it."""
    out = set()
    for name, (tp, _) in schemas.fields_of(cls).items():
        out.add((cls.__name__, name))
        for inner in nested_schemas(tp):
            out |= schema_keys(inner)
    return out


def nested_schemas(tp: object) -> list[type]:
    """The schema dataclasses a field's type refers to (both λ phases for ``LambdaPhase``)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):   # not a constraint instance
        return [tp, *([schemas.LAMBDA_PHASES["clip"]] if tp is schemas.LambdaPhase else [])]
    return [t for a in typing.get_args(tp) for t in nested_schemas(a)]


def used_keys(node: DictConfig, cls: type, refine: dict) -> set[tuple[str, str]]:
    """(schema class name, key) for every key the composed ``node`` sets."""
    cls = refine.get(cls, cls)
    out = set()
    for key in node:
        out.add((cls.__name__, str(key)))
        inner = nested_schemas(schemas.fields_of(cls)[str(key)][0])
        if inner and isinstance(node[key], DictConfig):
            out |= used_keys(node[key], inner[0], refine)
    return out


def test_schemas_hold_no_key_that_no_yaml_sets(configs):
    """The other direction of keeping schemas and yamls in sync (a yaml key missing from its
    schema fails ``test_every_yaml_fits_its_schema``)."""
    declared, used = set(), set()
    for cfg in configs:
        for group, (cls, refine) in schemas_for(cfg).items():
            declared |= schema_keys(refine.get(cls, cls))
            used |= used_keys(cfg[group], cls, refine)
    allowed = {(cls, key) for cls, keys in CODE_ONLY.items() for key in keys}
    allowed |= {(cls, key) for cls, key in declared if key == "_partial_"}   # Hydra's, any node
    assert declared - used - allowed == set()


def test_every_option_has_a_schema():
    """A new yaml needs its schema: the selection tables name every option's ``name``."""
    for option in group_options(CONFIG_DIR, "backbone"):
        name = OmegaConf.load(CONFIG_DIR / "backbone" / f"{option}.yaml").name
        assert name in schemas.BACKBONES, option
    assert set(METHODS) == set(schemas.METHODS)
    assert set(group_options(CONFIG_DIR, "logger")) == set(schemas.LOGGERS)
    families = {compose_config(f"task={t}").task.family for t in TASKS}
    assert families == set(schemas.TASKS)


# --- refusals ----------------------------------------------------------------------------------

UNKNOWN = [
    (["+task.foo=1"],
     "task has unknown keys foo (task.foo); valid: canonicalizer, compatible_groups, data,"),
    (["+task.finetune.lrr=1"], "task.finetune has unknown keys lrr (task.finetune.lrr)"),
    (["task=scan_add_jump", "+task.data.shuffle=true"], "(task.data.shuffle)"),
    (["task=nlg_race_respect", "+task.temperature=0.7"], "(task.temperature)"),
    (["task=dqn_gridworld", "+task.finetune.dqn.epsilon=0.1"],
     "task.finetune.dqn has unknown keys epsilon"),
    (["task=clip_rot90", "+task.head.bias=1"], "(task.head.bias)"),
    (["+method.temperature=2"], "(method.temperature)"),
    (["method=vanilla", "+method.hidden=3"], "(method.hidden)"),
    (["+method.lambda_phase.pool=3"], "(method.lambda_phase.pool)"),      # CLIP only
    (["+backbone.depth=3"], "(backbone.depth)"),
    (["backbone=qnet_mlp", "+backbone.channels=[4]"], "(backbone.channels)"),
    (["+group.size=3"], "(group.size)"),
    (["group=word_swap_gender", "+group.kwargs={}"], "(group.kwargs)"),
    (["+logger.project=x"], "(logger.project)"),
    (["logger=wandb", "+logger.notes=x"], "(logger.notes)"),
]

WRONG_TYPE = [
    (["task.finetune.lr=abc"], "task.finetune.lr='abc' must be a number"),
    (["task.finetune.steps=1.5"], "task.finetune.steps=1.5 must be an integer"),
    (["task=fmnist_rot90", "task.data.test_size=half"],
     "task.data.test_size='half' must be an integer or null"),
    (["task=scan_around_right", "task.finetune.iterations=1.5"],
     "task.finetune.iterations=1.5 must be an integer"),
    (["task=nlg_race_respect", "task.relaxed=maybe"], "task.relaxed='maybe' must be true or false"),
    (["task=dqn_cartpole", "task.env_kwargs=3"], "task.env_kwargs=3 must be a mapping"),
    (["task=clip_rot90", "task.head.logit_scale=true"],
     "task.head.logit_scale=true must be a string or a number"),
    (["task.compatible_groups=[rot90,1]"], "task.compatible_groups[1]=1 must be a string"),
    (["method.lambda_phase.lr=abc"], "method.lambda_phase.lr='abc' must be a number"),
    (["method.lambda_phase.steps=true"], "method.lambda_phase.steps=true must be an integer"),
    (["method=equizero", "method.tie_tolerance=small"], "method.tie_tolerance='small'"),
    (["method=vanilla", "method.chunk_size=1.5"], "method.chunk_size=1.5 must be an integer or "
                                                   "null"),
    (["backbone.hidden=big"], "backbone.hidden='big' must be an integer"),
    (["backbone.channels=[4,2.5]"], "backbone.channels[1]=2.5 must be an integer"),
    (["backbone.pretrained=3"], "backbone.pretrained=3 must be true or false"),
    (["group=word_swap_race", "group.demographics=man"],
     "group.demographics='man' must be a list"),
    (["logger=wandb", "logger.tags=x"], "logger.tags='x' must be a list"),
    (["logger=wandb", "logger.entity=3"], "logger.entity=3 must be a string or null"),
]


@pytest.mark.parametrize(("overrides", "message"), UNKNOWN + WRONG_TYPE)
def test_refused_in_validate(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(*overrides))


@pytest.mark.parametrize(("overrides", "message"), [UNKNOWN[0], WRONG_TYPE[3], WRONG_TYPE[8]])
def test_refused_before_hydra_runs(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_composes(overrides, CONFIG_DIR)


def test_sweeps_are_checked_cell_by_cell():
    """``check_composes`` sees the first cell; ``validate`` (every job) sees the others."""
    with pytest.raises(ConfigError, match=re.escape("method.lambda_phase.lr='abc'")):
        check_composes(["-m", "method=lambda_equitune,vanilla", "seed=0,1",
                        "method.lambda_phase.lr=abc"], CONFIG_DIR)
    check_composes(["-m", "task=clip_rot90,clip_flip", "method=vanilla,lambda_equitune",
                    "method.lambda_phase.select_every=2"], CONFIG_DIR)
    # A key only the first cell's schema has: that cell passes, the job of the second fails.
    argv = ["task=clip_rot90,digits_rot90", "method=vanilla", "++method.lambda_phase.pool=3"]
    check_composes(["-m", *argv], CONFIG_DIR)
    with pytest.raises(ConfigError, match=re.escape("(method.lambda_phase.pool)")):
        validate(compose_config("task=digits_rot90", *argv[1:]))


def test_missing_and_ignored_keys():
    with pytest.raises(ConfigError, match=re.escape("task.finetune.lr is missing")):
        validate(compose_config("~task.finetune.lr"))
    # λ-equitune's settings under another method are checked, not required (TINY sets one).
    check_schemas(compose_config("method=vanilla", "++method.lambda_phase.steps=4"))
    with pytest.raises(ConfigError, match=re.escape("method.lambda_phase.steps='x'")):
        check_schemas(compose_config("method=vanilla", "++method.lambda_phase.steps=x"))


def test_unknown_schema_selectors():
    cfg = compose_config()
    cfg.task.family = "audio"
    message = "task.family='audio' has no schema; valid: clip, dqn"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_schemas(cfg)
    cfg = compose_config("backbone=qnet_mlp")
    cfg.backbone.kind = "rnn"
    message = "backbone.kind='rnn' has no schema; valid: cnn, mlp"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_schemas(cfg)


def test_int_is_a_float_but_not_the_reverse():
    check_schemas(compose_config("task.finetune.lr=1"))
    message = "task.finetune.batch_size=32.0 must be an integer"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_schemas(compose_config("task.finetune.batch_size=32.0"))


@pytest.mark.parametrize(("override", "message"), [
    ("+sed=1", "unknown top-level keys sed; valid: backbone, cache_dir"),
    ("force=maybe", "force='maybe' must be true or false"),
    ("cpu_threads=1.5", "cpu_threads=1.5 must be an integer or null"),
    ("seed=abc", "seed='abc' must be an integer"),
])
def test_top_level_keys_are_typed_too(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_schemas(compose_config(override))


# --- ranges, finiteness and paths (equiv.constraints) -----------------------------------------

@pytest.mark.parametrize(("rule", "words", "inside", "outside"), [
    (constraints.Count, ">= 1", [1, 10**9], [0, -1]),
    (constraints.NonNegative, ">= 0", [0, 0.0, 1e-9], [-1, -1e-9]),
    (constraints.Positive, "> 0", [1e-12, 3], [0, 0.0, -2.5]),
    (constraints.Fraction, "in [0, 1]", [0, 0.5, 1.0], [-0.1, 1.0001]),
    (constraints.OpenFraction, "in (0, 1)", [1e-9, 0.5], [0, 1, 1.0]),
    (constraints.DropRate, "in [0, 1)", [0, 0.5], [1, 1.0, -0.5]),
    (constraints.Range(0, 1, low_open=True), "in (0, 1]", [1, 0.1], [0]),
])
def test_range_bounds_and_words(rule, words, inside, outside):
    assert rule.words() == words
    assert all(rule.admits(v) for v in inside) and not any(rule.admits(v) for v in outside)
    assert rule.admits("clip")                   # a string of a ``str | float`` field


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_must_be_finite_even_unconstrained(value):
    assert constraints.violation(value, False, []) == "a finite number"
    assert constraints.violation(value, False, [constraints.Positive]) == "a finite number > 0"
    assert constraints.violation(1.5, False, []) is None
    assert constraints.violation(True, True, [constraints.Count]) is None   # types: elsewhere


def constrained(tp: object) -> bool:
    """Whether a numeric field type declares its range (lists: their items)."""
    if typing.get_origin(tp) is list:
        return constrained(typing.get_args(tp)[0])
    return typing.get_origin(tp) is typing.Annotated and any(
        isinstance(e, constraints.Range) for e in typing.get_args(tp)[1:])


def numeric(tp: object) -> bool:
    args = typing.get_args(tp)
    return tp in (int, float) or any(numeric(a) for a in args if a is not type(None))


def every_schema() -> set[type]:
    tables = (schemas.TASKS, schemas.METHODS, schemas.BACKBONES, schemas.QNETS, schemas.GROUPS,
              schemas.LOGGERS, schemas.LAMBDA_PHASES)
    roots = {cls for table in tables for cls in table.values()}
    roots |= {schemas.Root, schemas.UserMethod, schemas.UserBackbone, schemas.UserGroup}
    seen: set[type] = set()
    while roots:
        cls = roots.pop()
        seen.add(cls)
        for tp, _ in schemas.fields_of(cls).values():
            roots |= set(nested_schemas(tp)) - seen
    return seen


def test_every_numeric_field_declares_its_range():
    """A new number in a schema must say what range it takes; seeds take any integer."""
    loose = [f"{cls.__name__}.{name}" for cls in every_schema()
             for name, (tp, _) in schemas.fields_of(cls).items()
             if numeric(tp) and not constrained(tp) and not name.endswith("seed")]
    assert loose == []


@pytest.mark.parametrize("override", [
    "task.finetune.steps=0", "method.lambda_phase.steps=0", "method=equizero",
    "method.dropout=0.0", "task.finetune.weight_decay=0", "++task.eval.selection_probe=0",
    "task=clip_rot90", "task=dqn_cartpole",
])
def test_zero_where_it_means_off_is_valid(override):
    extra = {"method=equizero": ["method.tie_tolerance=0"],
             "task=clip_rot90": ["task.eval.invariance_probe=0", "task.data.num_workers=0",
                                 "method.lambda_phase.select_every=0"],
             "task=dqn_cartpole": ["task.finetune.dqn.learning_starts=0",
                                   "task.finetune.dqn.exploration_fraction=0",
                                   "++task.finetune.dqn.max_grad_norm=null"]}
    check_schemas(compose_config(override, *extra.get(override, [])))


def test_dqn_config_checks_its_own_ranges():
    """The trainer's config, built from code, refuses what the schema refuses."""
    with pytest.raises(ValueError, match=re.escape("gamma=nan is not valid: a finite number in")):
        DQNConfig(gamma=math.nan)
    with pytest.raises(ValueError, match=re.escape("tau=0.0 is not valid: a finite number in (0")):
        DQNConfig(tau=0.0)
    DQNConfig(learning_starts=0, max_grad_norm=None, checkpoint_every=None)


def test_writable_dir(tmp_path):
    rule = constraints.WritableDir()
    assert rule.problem(str(tmp_path)) is None
    assert rule.problem(str(tmp_path / "new" / "deeper")) is None
    assert list(tmp_path.iterdir()) == []                  # the probe leaves nothing behind
    (tmp_path / "afile").write_text("")
    not_a_dir = f"{tmp_path / 'afile'} is not a directory"
    assert rule.problem(str(tmp_path / "afile" / "sub")) == rule.problem(str(tmp_path / "afile"))
    assert rule.problem(str(tmp_path / "afile")) == not_a_dir
    # Root ignores permission bits: a place where no directory can be made, whoever asks.
    assert "cannot create a directory in /proc" in rule.problem("/proc/equiv-test/x")


def test_readable_file(tmp_path):
    rule = constraints.ReadableFile()
    (tmp_path / "model.pt").write_bytes(b"x")
    assert rule.problem(str(tmp_path / "model.pt")) is None
    assert rule.problem(str(tmp_path / "none.pt")) == "it does not exist"
    assert rule.problem(str(tmp_path)) == "it is not a readable file"


@pytest.mark.parametrize(("override", "message"), [
    ("output_root={tmp}/afile/out", "output_root='{tmp}/afile/out' is not valid: a directory "
                                    "that can be created and written ({tmp}/afile is not a "
                                    "directory)"),
    ("cache_dir={tmp}/afile", "cache_dir='{tmp}/afile' is not valid"),
    ("backbone.checkpoint={tmp}/none.pt", "backbone.checkpoint='{tmp}/none.pt' is not valid: a "
                                          "state-dict file saved with torch.save("),
])
def test_path_keys_are_checked_before_hydra_runs(override, message, tmp_path):
    (tmp_path / "afile").write_text("")
    override, message = (s.replace("{tmp}", str(tmp_path)) for s in (override, message))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_composes([override], CONFIG_DIR)
