"""Typed schemas for the five config groups (task, method, backbone, group, logger).

Why a check and not Hydra's own schema pattern: a config node here is shaped by several files
(a task file also sets ``method.*`` and top-level keys; tests and presets add ``++method.*``
keys for every method), and the family decides which schema applies. So the composed config is
checked against the schema its ``task.family`` / ``method.name`` / ``backbone.name`` /
``group._target_`` / ``logger.name`` selects, by ``check_schemas``: in
``equiv.config.check_composes`` (before Hydra runs) and in ``equiv.config.validate`` (every job
of a sweep). The yaml files stay plain, the composed config is not converted, and errors are one
line with the key's full path. A method, backbone or group node whose ``_target_`` lies outside
the suite (a user's class) gets an open schema: its suite keys are typed here, its constructor's
keys are checked against the callable's signature (``equiv.instantiate.check_targets``).

Conventions:
  * a field without a default must be present; a field with a default (``absent_ok()``) may be
    left out, the code then applies its own default;
  * ``... | None`` means null is a valid value; ``Any`` marks a genuinely free-form node;
  * ``float`` accepts integers, ``int`` accepts neither floats nor booleans, and no type
    accepts a string of digits (nothing is converted: the code sees what was given);
  * ``Ignored[X]``: keys the code ignores in this context (λ-equitune's settings under another
    method); their types and names are checked, none is required;
  * every number is finite, and in the range its ``Annotated`` constraint declares
    (``equiv.constraints``: ``OneOrMore`` sizes, ``ZeroOrMore`` where 0 means "none" or "off",
    ``Rate`` > 0, ``Share`` in [0, 1], ...); path keys are checked for what the run does with
    them (``output_root`` and ``cache_dir`` can be created and written, ``backbone.checkpoint``
    is a readable file). Errors name the key, the value and what is valid.

Torch-free and fast (well under a millisecond per config node).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar, Union

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException

from equiv.constraints import (
    Count,
    DropRate,
    Fraction,
    NonNegative,
    OpenFraction,
    Positive,
    ReadableFile,
    WritableDir,
    violation,
)
from equiv.errors import ConfigError
from equiv.instantiate import is_suite_target
from equiv.rl.config import DQNConfig

T = TypeVar("T")
IGNORED = "ignored"
Ignored = Annotated[T, IGNORED]

OneOrMore = Annotated[int, Count]                  # sizes, periods, budgets that must run
ZeroOrMore = Annotated[int, NonNegative]           # 0 = none / off (read where it is used)
Rate = Annotated[float, Positive]                  # learning rates, norms
NonNegativeFloat = Annotated[float, NonNegative]   # weight decay, tolerances
Share = Annotated[float, Fraction]                 # probabilities, momentum
DropoutRate = Annotated[float, DropRate]
StateDictFile = Annotated[str, ReadableFile(
    "a state-dict file saved with torch.save(model.state_dict(), path)")]


def absent_ok() -> Any:
    """A key that may be left out of the config (the code then uses its own default)."""
    return field(default=None)


schema = dataclass(kw_only=True)       # kw_only: required fields may follow optional ones


# --- shared pieces ---------------------------------------------------------------------------

@schema
class Synthetic:
    """Seeded stand-in data (``task.dataset=synthetic``, tests)."""

    train: OneOrMore
    test: OneOrMore
    classes: OneOrMore
    seed: int


@schema
class Eval:
    batch_size: OneOrMore
    transform_mode: str                          # per_example | per_batch
    invariance_probe: ZeroOrMore                    # CLIP: 0 = not measured


@schema
class ImageEval(Eval):
    invariance_probe: OneOrMore
    selection_probe: ZeroOrMore = absent_ok()       # 0 or absent: every test image


@schema
class TaskBase:
    """Keys every task has."""

    name: str
    family: str
    compatible_groups: list[str]
    equizero_proxy: str
    canonicalizer: Any = absent_ok()             # method=canonicalize's network (a _target_ node)


# --- task: image classification (digits, Fashion-MNIST, torchvision CNNs on CIFAR-10) --------

@schema
class ImageData:
    split_seed: int
    test_fraction: Annotated[float, OpenFraction] = absent_ok()   # digits
    root: str | None = absent_ok()               # null = under cache_dir (read: the family
                                                 # checks that the data is there)
    train_size: Annotated[int | None, Count] = absent_ok()        # null = all
    test_size: Annotated[int | None, Count] = absent_ok()
    synthetic: Synthetic = absent_ok()


@schema
class ImagePretrain:
    epochs: OneOrMore                               # 0 would record an untrained backbone
    batch_size: OneOrMore
    lr: Rate
    weight_decay: NonNegativeFloat
    seed: int


@schema
class ImageFinetune:
    steps: ZeroOrMore                               # 0 = zero-shot only
    batch_size: OneOrMore
    lr: Rate
    weight_decay: NonNegativeFloat
    eval_every: OneOrMore
    optimizer: str = absent_ok()                 # default adam
    momentum: Share = absent_ok()
    checkpoint_every: Annotated[int | None, Count] = absent_ok()   # default eval_every


@schema
class ImageTask(TaskBase):
    dataset: str
    transform: str
    data: ImageData
    finetune: ImageFinetune
    eval: ImageEval
    pretrain: ImagePretrain = absent_ok()        # backbones the suite pretrains itself
    paper_code_compat: bool = absent_ok()
    head: str = absent_ok()                      # replace | authors (ImageNet backbones)
    train_backbone: bool = absent_ok()


# --- task: CLIP --------------------------------------------------------------------------------

@schema
class ClipHead:
    logit_scale: Annotated[str | float, Positive]   # "clip" (the model's) or a number
    output: str


@schema
class ClipData:
    limit_test: Annotated[int | None, Count]
    num_workers: ZeroOrMore
    synthetic: Synthetic


@schema
class ClipFinetune:
    steps: ZeroOrMore                               # 0 = zero-shot only
    batch_size: OneOrMore
    lr: Rate
    momentum: Share
    weight_decay: NonNegativeFloat
    eval_every: OneOrMore


@schema
class ClipTask(TaskBase):
    dataset: str
    transform: str
    paper_code_compat: bool
    head: ClipHead
    lambda_combine: str
    data: ClipData
    finetune: ClipFinetune
    eval: Eval


# --- task: SCAN --------------------------------------------------------------------------------

@schema
class ScanData:
    validation_fraction: Annotated[float, OpenFraction]
    split_seed: int
    eval_limit: Annotated[int | None, Count]


@schema
class ScanPretrain:
    examples: OneOrMore
    batch_size: OneOrMore
    lr: Rate
    schedule: str
    teacher_forcing: Share                   # a probability
    clip_norm: Rate
    eval_every_examples: OneOrMore
    seed: int


@schema
class ScanFinetune:
    iterations: ZeroOrMore                          # 0 = zero-shot only
    batch_size: OneOrMore
    lr: Rate
    weight_decay: NonNegativeFloat
    clip_norm: Rate
    teacher_forcing: Share
    eval_every: OneOrMore


@schema
class ScanTask(TaskBase):
    split: str
    combine: str
    select_model: str
    paper_code_compat: bool
    max_decode_len: OneOrMore
    eval_batch_size: OneOrMore
    data: ScanData
    pretrain: ScanPretrain
    finetune: ScanFinetune


# --- task: DQN ---------------------------------------------------------------------------------

@schema
class DqnPretrain:
    seed: int
    dqn: DQNConfig                               # the trainer's own settings (absent: defaults)


@schema
class DqnFinetune:
    enabled: bool
    dqn: DQNConfig


@schema
class DqnTask(TaskBase):
    env: str
    env_kwargs: dict[str, Any]                   # passed to the environment as they are
    equizero_surrogate: str
    pretrain: DqnPretrain
    finetune: DqnFinetune


# --- task: NLG ---------------------------------------------------------------------------------

@schema
class NlgTask(TaskBase):
    context: str
    demographics: list[str] | None               # null = the group's
    relaxed: bool
    combine: str
    scorer: str
    regard_model: str
    samples_per_prompt: OneOrMore
    max_new_tokens: OneOrMore
    top_k: OneOrMore
    batch_size: OneOrMore
    score_batch_size: OneOrMore


TASKS: dict[str, type] = {"image_classification": ImageTask, "clip": ClipTask, "scan": ScanTask,
                          "dqn": DqnTask, "nlg": NlgTask}


# --- method ------------------------------------------------------------------------------------

@schema
class Phase:
    """A training phase of a method's added network (λ-network, canonicalizer), backbone
    frozen."""

    steps: ZeroOrMore                               # 0 = no such phase
    batch_size: OneOrMore
    lr: Rate


@schema
class LambdaPhase(Phase):
    """λ-equitune's phase 1: the λ-network alone, backbone frozen. Its own type so that a family
    can refine it (``LAMBDA_PHASES``) without touching the canonicalizer's phases."""


@schema
class ClipLambdaPhase(LambdaPhase):
    """The CLIP tasks' λ phase (SGD with momentum over a pool of cached features)."""

    momentum: Share
    pool: OneOrMore
    select_every: ZeroOrMore                        # 0 = keep the last λ-network
    select_images: OneOrMore


# The λ-phase schema a family uses, where it differs from ``LambdaPhase``.
LAMBDA_PHASES: dict[str, type] = {"clip": ClipLambdaPhase}


@schema
class Method:
    """Keys of every method. A task may set λ-equitune's settings for every method (the CLIP
    tasks do, so that ``method.lambda_phase.*`` overrides work in sweeps); others ignore them."""

    _target_: str                                # the class (equiv.instantiate builds it)
    _partial_: bool = absent_ok()
    name: str
    chunk_size: Annotated[int | None, Count]     # null = all |G|*B views at once
    freeze_lambda: bool = absent_ok()
    lambda_phase: Ignored[LambdaPhase] = absent_ok()


@schema
class Equizero(Method):
    proxy: str
    surrogate: str
    tie_tolerance: NonNegativeFloat                      # relative; 0 = exact ties only


@schema
class LambdaEquitune(Method):
    normalization: str
    lambda_input: str
    detach_features: bool
    hidden: OneOrMore
    dropout: DropoutRate
    freeze_lambda: bool
    lambda_phase: LambdaPhase


@schema
class Canonicalize(Method):
    canonicalizer: dict[str, Any] | None         # _target_ and arguments; null: not this task
    gradient: str
    temperature: Rate
    tie_tolerance: NonNegativeFloat                      # relative; 0 = exact ties only
    prior_weight: NonNegativeFloat                       # 0 = no prior term
    freeze_canonicalizer: bool
    canonicalizer_lr: Annotated[float | None, Positive]  # finetuning; null = the task's lr
    prior_phase: Phase
    canonicalizer_phase: Phase


METHODS: dict[str, type] = {"vanilla": Method, "equitune": Method,
                            "lambda_equitune": LambdaEquitune, "equizero": Equizero,
                            "canonicalize": Canonicalize}


# --- backbone ----------------------------------------------------------------------------------

@schema
class Backbone:
    _target_: str                                # the class or loader
    _partial_: bool = absent_ok()
    name: str
    pretrained: bool                             # false = explicit random init, recorded


@schema
class SelfPretrained(Backbone):
    """Backbones the suite pretrains itself (cached), or loads from ``checkpoint``."""

    checkpoint: StateDictFile | None               # a state-dict file; null = our pretraining


@schema
class SmallCnn(SelfPretrained):
    channels: list[OneOrMore]
    hidden: OneOrMore
    dropout: DropoutRate


@schema
class SmallResnet(SelfPretrained):
    width: OneOrMore
    blocks: list[OneOrMore]                         # basic blocks per stage


@schema
class TorchvisionCnn(Backbone):
    arch: str
    weights: str
    input_size: OneOrMore                           # the family checks the arch's minimum


@schema
class Clip(Backbone):
    arch: str
    tag: str | None
    quick_gelu: bool | None                      # null = as the tag was trained
    precision: str
    model_config: dict[str, Any] | None          # an open_clip architecture, free-form


@schema
class Gpt2(Backbone):
    model: str


@schema
class TinyGpt2(Backbone):
    n_layer: OneOrMore
    n_embd: OneOrMore
    n_head: OneOrMore
    seed: int


@schema
class QNet(SelfPretrained):
    """DQN Q-networks; ``kind`` selects the schema."""

    kind: str


@schema
class QNetCnn(QNet):
    channels: list[OneOrMore]
    hidden: OneOrMore


@schema
class QNetMlp(QNet):
    hidden: list[OneOrMore]


@schema
class Seq2seq(SelfPretrained):
    cell: str
    hidden: OneOrMore
    dropout: DropoutRate
    bidirectional: bool
    attention: bool


QNETS: dict[str, type] = {"cnn": QNetCnn, "mlp": QNetMlp}      # by backbone.kind
BACKBONES: dict[str, type] = {
    "small_cnn": SmallCnn, "small_resnet": SmallResnet,
    "tv_resnet18": TorchvisionCnn, "tv_alexnet": TorchvisionCnn,
    **dict.fromkeys(("clip_rn50", "clip_rn101", "clip_vitb32", "clip_vitb16", "tiny_clip"), Clip),
    "gpt2": Gpt2, "tiny_gpt2": TinyGpt2,
    **dict.fromkeys(("qnet_cnn", "qnet_tiny_cnn", "qnet_mlp", "qnet_tiny_mlp"), QNet),
    **dict.fromkeys(("seq2seq_rnn", "seq2seq_gru", "seq2seq_lstm", "seq2seq_tiny"), Seq2seq),
}


# --- group and logger --------------------------------------------------------------------------

@schema
class Group:
    """Groups whose factory takes nothing from the config (DQN, SCAN, trivial)."""

    _target_: str                                # the factory function
    _partial_: bool = absent_ok()
    name: str


@schema
class ImageGroup(Group):
    output: str                                  # invariant | image


@schema
class WordSwapGroup(Group):
    """NLG word-swap groups (``word_swap_*``)."""

    word_set: str
    demographics: list[str]
    on_multi_token: str


GROUPS: dict[str, type] = {   # by _target_; other suite targets: Group
    **{f"equiv.groups.{g}": ImageGroup for g in ("rot45", "rot90", "rot180", "hflip", "d4")},
    "equiv.data.nlg.word_swap": WordSwapGroup,
}


# --- a node of one's own -----------------------------------------------------------------------

@schema
class UserMethod:
    """A method class from outside the suite: the keys the protocols read."""

    OPEN: ClassVar[bool] = True                  # other keys: the constructor's (checked there)
    _target_: str
    _partial_: bool = absent_ok()
    name: str
    freeze_lambda: bool = absent_ok()
    lambda_phase: Ignored[LambdaPhase] = absent_ok()


@schema
class UserBackbone:
    OPEN: ClassVar[bool] = True
    _target_: str
    _partial_: bool = absent_ok()
    name: str
    pretrained: bool
    checkpoint: StateDictFile | None = absent_ok()


@schema
class UserGroup:
    OPEN: ClassVar[bool] = True
    _target_: str
    _partial_: bool = absent_ok()
    name: str
    demographics: list[str] = absent_ok()


@schema
class NoLogger:
    name: str


@schema
class WandbLogger:
    name: str
    project: str | None                          # null = equiv
    entity: str | None
    group: str | None                            # null = exp_name
    tags: list[str]
    mode: str | None                             # null = automatic
    run_name: str | None


LOGGERS: dict[str, type] = {"none": NoLogger, "wandb": WandbLogger}


# --- selection ---------------------------------------------------------------------------------

def _select(table: Mapping[str, type], value: object, key: str) -> type:
    if not isinstance(value, str) or value not in table:
        raise ConfigError(f"{key}={value!r} has no schema; valid: {', '.join(sorted(table))} "
                          "(a new one goes in equiv/schemas.py)")
    return table[value]


def schemas_for(cfg: DictConfig) -> dict[str, tuple[type, dict[type, type]]]:
    """The schema of each group node of ``cfg`` (and the family's refinements of its parts)."""
    task, method, backbone, group = cfg.task, cfg.method, cfg.backbone, cfg.group
    family = task.get("family")
    method_schema, backbone_schema, group_schema = UserMethod, UserBackbone, UserGroup
    if is_suite_target(method):
        method_schema = _select(METHODS, method.get("name"), "method.name")
    if is_suite_target(backbone):
        backbone_schema = _select(BACKBONES, backbone.get("name"), "backbone.name")
        if backbone_schema is QNet:
            backbone_schema = _select(QNETS, backbone.get("kind"), "backbone.kind")
    if is_suite_target(group):
        group_schema = GROUPS.get(group.get("_target_"), Group)
    refine = {LambdaPhase: LAMBDA_PHASES[family]} if family in LAMBDA_PHASES else {}
    return {
        "task": (_select(TASKS, family, "task.family"), {}),
        "method": (method_schema, refine),
        "backbone": (backbone_schema, {}),
        "group": (group_schema, {}),
        "logger": (_select(LOGGERS, cfg.logger.get("name"), "logger.name"), {}),
    }


@schema
class Root:
    """The top-level keys of ``equiv/configs/config.yaml`` (the groups have their own schemas)."""

    seed: int
    device: str
    cpu_threads: Annotated[int | None, Count]    # null = torch's default
    exp_name: str
    output_root: Annotated[str, WritableDir()]   # run directories are created under it
    cache_dir: Annotated[str, WritableDir()]     # pretrained models, features: written
    force: bool
    run_subdir: Any                      # a Hydra interpolation: resolvable only inside a run


ROOT_GROUPS = ("task", "method", "backbone", "group", "logger")


def check_root(cfg: DictConfig) -> None:
    """No unknown top-level keys (``+sed=1``), and the top-level values have their types."""
    fields = fields_of(Root)
    unknown = [str(k) for k in cfg if k not in fields and k not in ROOT_GROUPS and k != "hydra"]
    if unknown:
        raise ConfigError(f"unknown top-level keys {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted([*fields, *ROOT_GROUPS]))}")
    for name, (tp, required) in fields.items():
        if name not in cfg:
            if required:
                raise ConfigError(f"{name} is missing (equiv/configs/config.yaml sets it)")
        elif tp is not Any:
            check_value(_child(cfg, name, ""), tp, name)


def check_schemas(cfg: DictConfig) -> None:
    """Every group node of ``cfg`` against its schema; ``ConfigError`` naming the key's path."""
    check_root(cfg)
    for group, (node_schema, refine) in schemas_for(cfg).items():
        check_value(cfg[group], node_schema, group, refine)


# --- the check ---------------------------------------------------------------------------------

NoneType = type(None)
WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
         list: "a list", dict: "a mapping"}


@functools.cache
def fields_of(cls: type) -> dict[str, tuple[Any, bool]]:
    """``{name: (type, required)}`` of a schema dataclass (annotations resolved once)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: (hints[f.name], f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)}


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return describe(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        words = [describe(a) for a in args if a is not NoneType]
        return " or ".join(words + (["null"] if NoneType in args else []))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return WORDS.get(origin or tp, str(tp))


def show(value: object) -> str:
    """A value as it was written on the command line or in yaml."""
    if value is None or isinstance(value, bool):
        return str(value).lower().replace("none", "null")
    return repr(value)


def matches(value: object, tp: Any) -> bool:
    """Whether a leaf value has type ``tp`` (one of ``WORDS``' types, or ``Any``)."""
    if tp is Any:
        return True
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_value(value: Any, tp: Any, path: str, refine: Mapping[type, type] | None = None,
                partial: bool = False, rules: tuple[object, ...] = (),
                declared: Any = None) -> None:
    """Raise ``ConfigError`` unless ``value`` (at ``path``) has type ``tp`` and satisfies its
    constraints (``rules``: those of the enclosing ``Annotated``; ``declared``: the type as
    written, for the message)."""
    refine = refine or {}
    declared = tp if declared is None else declared
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        partial = partial or IGNORED in extras
        rules = (*rules, *(e for e in extras if e != IGNORED))
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and NoneType in args:
            return
        options = [a for a in args if a is not NoneType]
        if len(options) == 1:
            return check_value(value, options[0], path, refine, partial, rules, declared)
        if not any(matches(value, a) for a in options):
            raise ConfigError(f"{path}={show(value)} must be {describe(declared)}")
        return _check_leaf(value, int in options, path, rules)
    tp = refine.get(tp, tp)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        if not isinstance(value, DictConfig):
            raise ConfigError(f"{path}={show(value)} must be {describe(declared)}")
        if origin is dict:
            for key in value:
                check_value(_child(value, key, path), typing.get_args(tp)[1], f"{path}.{key}",
                            refine, partial)
            return
        _check_fields(value, tp, path, refine, partial)
    elif origin is list:
        if not isinstance(value, ListConfig):
            raise ConfigError(f"{path}={show(value)} must be {describe(declared)}")
        (item,) = typing.get_args(tp)
        for i in range(len(value)):
            check_value(_child(value, i, path), item, f"{path}[{i}]", refine, partial)
    elif not matches(value, tp):
        raise ConfigError(f"{path}={show(value)} must be {describe(declared)}")
    else:
        _check_leaf(value, tp is int, path, rules)


def _check_leaf(value: Any, integer: bool, path: str, rules: tuple[object, ...]) -> None:
    """Finite, in range, a usable path: ``path=value is not valid: <what is>``."""
    what = violation(value, integer, rules)
    if what:
        raise ConfigError(f"{path}={show(value)} is not valid: {what}")


def _check_fields(node: DictConfig, cls: type, path: str, refine: Mapping[type, type],
                  partial: bool) -> None:
    fields = fields_of(cls)
    unknown = [] if getattr(cls, "OPEN", False) else [str(k) for k in node if k not in fields]
    if unknown:
        raise ConfigError(f"{path} has unknown keys {', '.join(unknown)} "
                          f"({', '.join(f'{path}.{k}' for k in unknown)}); valid: "
                          f"{', '.join(sorted(fields))}")
    for name, (tp, required) in fields.items():
        if name in node:
            check_value(_child(node, name, path), tp, f"{path}.{name}", refine, partial)
        elif required and not partial:
            raise ConfigError(f"{path}.{name} is missing ({cls.__name__} requires it)")


def _child(node: DictConfig | ListConfig, key: str | int, path: str) -> Any:
    """``node[key]`` with interpolations resolved; a failure names the key."""
    try:
        return node[key]
    except OmegaConfBaseException as err:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from err
