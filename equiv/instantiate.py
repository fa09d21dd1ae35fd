"""Configs name their classes: a node's ``_target_`` is built by ``hydra.utils.instantiate``.

A method, backbone or group node holds its target's constructor arguments at its top level
(``method.dropout``, ``backbone.channels``, ``group.output``), so that
``backbone._target_=my_pkg.MyNet +backbone.width=32`` plugs in a class of one's own. A node also
holds a few *suite keys* that the protocols read and no constructor takes (``SUITE_KEYS``).
``build`` instantiates a node without them, with what is only known at run time (the backbone,
the data's shape) supplied by the protocol; ``check_targets`` finds a target that does not
import and a key its callable does not take, before any heavy work.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from equiv.errors import ConfigError

# Per node kind, the keys the protocols consume and no constructor takes.
SUITE_KEYS: dict[str, frozenset[str]] = {
    "method": frozenset({"name", "freeze_lambda", "lambda_phase", "canonicalizer",
                         "freeze_canonicalizer", "canonicalizer_lr", "prior_phase",
                         "canonicalizer_phase"}),
    "backbone": frozenset({"name", "pretrained", "checkpoint", "kind"}),
    "group": frozenset({"name", "demographics"}),
    "canonicalizer": frozenset(),
}
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
SUITE_PACKAGE = "equiv."


def is_suite_target(node: Mapping[str, Any]) -> bool:
    """Whether ``node`` names one of the suite's own callables (schemas and cache keys know
    those by the node's ``name``; anything else is a user's)."""
    target = node.get("_target_")
    return isinstance(target, str) and target.startswith(SUITE_PACKAGE)


def arguments(node: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The constructor arguments of ``node``: its keys without suite and Hydra keys."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {str(k): v for k, v in plain.items()
            if k not in SUITE_KEYS[kind] and k not in HYDRA_KEYS}


def _locate(path: str) -> Any:
    """The object at dotted ``path``: its longest importable module prefix, then attributes.
    (Hydra's own lookup logs its failures, which would add lines to a one-line error.)"""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as err:      # this prefix is not a module: try a shorter one
            if i > 1 and err.name is not None and (module + ".").startswith(err.name + "."):
                continue
            raise
        for attr in parts[i:]:
            found = getattr(found, attr)
        return found
    raise ImportError(f"empty target {path!r}")


def target(node: Mapping[str, Any], kind: str) -> Callable[..., Any]:
    """The callable ``node._target_`` names; ``ConfigError`` if it does not import."""
    name = node.get("_target_")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind}._target_ is missing (the class or function that builds it)")
    try:
        found = _locate(name)
    except Exception as err:  # ImportError, AttributeError, or the module's own failure
        first = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"{kind}._target_={name!r} cannot be imported "
                          f"({type(err).__name__}: {first})") from err
    if not callable(found):
        raise ConfigError(f"{kind}._target_={name!r} is not a class or function")
    return found


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """``fn``'s named parameters, or None when it takes any keyword (``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def check(node: Mapping[str, Any], kind: str) -> Callable[..., Any]:
    """Import ``node``'s target and refuse keys its callable does not take (one line, with
    the key's path)."""
    fn = target(node, kind)
    params = _parameters(fn)
    if params is None:
        return fn
    unknown = [k for k in arguments(node, kind) if k not in params]
    if unknown:
        raise ConfigError(f"{kind} has unknown keys {', '.join(unknown)} "
                          f"({', '.join(f'{kind}.{k}' for k in unknown)}) for "
                          f"{node['_target_']}; valid: {', '.join(sorted(params))}")
    return fn


def check_targets(cfg: DictConfig) -> None:
    """Every node that names its class: the target imports and takes the node's keys."""
    for kind in ("method", "backbone", "group"):
        check(cfg[kind], kind)
    if cfg.method.get("canonicalizer") is not None:
        check(cfg.method.canonicalizer, "canonicalizer")


def build(node: Mapping[str, Any], kind: str, optional: Mapping[str, Any] | None = None,
          **runtime: Any) -> Any:
    """Instantiate ``node`` without its suite keys, with the run-time arguments ``runtime``
    (they win over a node key of the same name) and those of ``optional`` the target takes
    (e.g. ``input_shape``, which only λ-equitune scoring raw inputs needs)."""
    fn = check(node, kind)
    params = _parameters(fn)
    given = {**runtime, **{k: v for k, v in (optional or {}).items()
                           if params is None or k in params}}
    spec = {**arguments(node, kind), **{k: None for k in given}}
    try:
        inspect.signature(fn).bind(**spec)
    except TypeError as err:
        raise ConfigError(f"{kind}: {node['_target_']} cannot be called with the keys "
                          f"{', '.join(spec)}: {err}") from err
    from hydra.utils import instantiate

    options = {"_convert_": node.get("_convert_", "all"),
               "_recursive_": node.get("_recursive_", True)}
    factory = instantiate({"_target_": node["_target_"], **arguments(node, kind)},
                          _partial_=True, **options)
    return factory(**given)


def variant(node: Mapping[str, Any], kind: str, table: Mapping[type, Any], family: str) -> Any:
    """``table``'s entry for the class ``node`` names (e.g. the sequence variant of a method);
    ``ConfigError`` for a class the family has no variant of."""
    cls = target(node, kind)
    if cls not in table:
        valid = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in table)
        raise ConfigError(f"{kind}._target_={node['_target_']} has no {family} variant; "
                          f"valid: {valid}")
    return table[cls]



def build_method(node: Mapping[str, Any], backbone: Any, action: Any,
                 optional: Mapping[str, Any] | None = None, **runtime: Any) -> Any:
    """The method ``node`` names around ``backbone`` and ``action``. A canonicalizer sub-node
    (``method=canonicalize``) is built first, with the action and those of ``optional`` its
    target takes (``in_channels``, ``vocab_size``, ``in_features``, ``seed``)."""
    sub = node.get("canonicalizer")
    if sub is not None:
        runtime["canonicalizer"] = build(sub, "canonicalizer", optional=optional, action=action)
    return build(node, "method", optional=optional, backbone=backbone, action=action, **runtime)
