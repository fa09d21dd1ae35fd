"""DQN: environment steps per second of collection, training and evaluation, per environment.

Training is dominated by the gradient updates, not by the environments: the rows separate
acting + stepping + replay (collection, no updates) from the full loop (the task's finetuning
settings), for one environment and for the vector of the task's ``num_envs``, and for a plain
and a symmetrized (``|G|`` views) Q-network.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from omegaconf import OmegaConf

from equiv.config import CONFIG_DIR
from scripts.benchmarks.common import Section, peak_rss_mb, timed

ENVS = ("gridworld", "cartpole", "acrobot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dqn-envs", default=",".join(ENVS),
                        help="comma-separated subset of " + ", ".join(ENVS))
    parser.add_argument("--dqn-steps", type=int, default=4000,
                        help="env steps per training/collection measurement")
    parser.add_argument("--dqn-eval-episodes", type=int, default=None,
                        help="evaluation episodes (default: the task's eval_episodes)")
    parser.add_argument("--dqn-method", default="equizero",
                        choices=["equitune", "lambda_equitune", "equizero"],
                        help="the symmetrized Q-network measured next to the plain one")


class _Counter(gym.Wrapper):
    """Counts the real steps of every copy into one shared list."""

    def __init__(self, env: gym.Env, counts: list[int]) -> None:
        super().__init__(env)
        self.counts = counts

    def step(self, action: Any) -> Any:
        self.counts[0] += 1
        return self.env.step(action)


def _task(env: str) -> tuple[Any, Any]:
    """The task config and its default backbone config, read from the YAML files."""
    raw = OmegaConf.load(CONFIG_DIR / "task" / f"dqn_{env}.yaml")
    overrides = {k: v for entry in raw.defaults if OmegaConf.is_dict(entry)
                 for k, v in entry.items()}
    backbone = overrides["override /backbone"]
    return raw.task, OmegaConf.load(CONFIG_DIR / "backbone" / f"{backbone}.yaml")


def _model(env: str, method: str, task: Any, backbone: Any) -> torch.nn.Module:
    from equiv.experiments.dqn.environments import env_factory
    from equiv.experiments.dqn.protocol import build_qnet
    from equiv.instantiate import build

    group = "trivial" if method == "vanilla" else task.compatible_groups[0]
    torch.manual_seed(0)
    qnet = build_qnet(OmegaConf.create({"backbone": backbone}),
                      env_factory(env, task.env_kwargs, restricted=False))
    # The method and group as a run composes them (the method's ``${task.*}`` defaults resolved).
    both = OmegaConf.create({
        "task": task, "method": OmegaConf.load(CONFIG_DIR / "method" / f"{method}.yaml"),
        "group": OmegaConf.load(CONFIG_DIR / "group" / f"{group}.yaml")})
    return build(both.method, "method", backbone=qnet, action=build(both.group, "group"))


def _train_rate(model: torch.nn.Module, make_env: Callable[[], gym.Env], base: Any,
                steps: int, updates: bool, num_envs: int) -> tuple[float, float]:
    """``(env steps/s outside evaluation, peak RSS MB)`` of one short ``train_dqn`` run."""
    from equiv.rl import DQNConfig, train_dqn

    fields = {f.name for f in dataclasses.fields(DQNConfig)}
    cfg = {k: v for k, v in OmegaConf.to_container(base).items() if k in fields}
    cfg.update(total_steps=steps, num_envs=num_envs, eval_at_start=False, eval_every=10**9,
               eval_episodes=1, checkpoint_every=None, eps_start=0.1, eps_end=0.1,
               learning_starts=min(cfg.get("learning_starts", 1000), steps // 4)
               if updates else steps + 1)
    report: dict[str, Any] = {}
    memory = peak_rss_mb(lambda: report.update(train_dqn(model, make_env, DQNConfig(**cfg), 0)))
    return report["steps_per_second"], memory


def _eval_rate(model: torch.nn.Module, make_env: Callable[[], gym.Env], episodes: int,
               min_steps: int, batched: bool = True) -> tuple[float, int]:
    """``(env steps/s, env steps)`` of greedy evaluations of ``episodes`` episodes, side by side
    in one vector env (``batched``) or one episode at a time, repeated on fresh seeds until
    ``min_steps`` env steps were taken (short episodes would time nothing but overhead)."""
    from equiv.rl import evaluate

    counts = [0]

    def counted() -> gym.Env:
        return _Counter(make_env(), counts)

    def run() -> None:
        first = 1_000_000
        while counts[0] < min_steps:
            seeds = list(range(first, first + episodes))
            if batched:
                evaluate(model, counted, seeds)
            else:
                for seed in seeds:
                    evaluate(model, counted, [seed])
            first += episodes

    seconds, _ = timed(run)
    return counts[0] / seconds, counts[0]


def bench(args: argparse.Namespace) -> Section:
    from equiv.experiments.dqn.environments import env_factory

    header = ["env", "measurement", "Q-network", "envs", "env steps / s", "peak RSS (MB)"]
    rows: list[list[str]] = []
    notes: list[str] = []
    for env in [e.strip() for e in args.dqn_envs.split(",") if e.strip()]:
        if env not in ENVS:
            raise SystemExit(f"--dqn-envs: unknown environment {env!r}; valid: {', '.join(ENVS)}")
        task, backbone = _task(env)
        fine = task.finetune.dqn
        make_env = env_factory(env, task.env_kwargs, restricted=False)
        n = int(fine.get("num_envs", 1))
        plain = _model(env, "vanilla", task, backbone)
        wrapped = _model(env, args.dqn_method, task, backbone)
        name = f"{args.dqn_method} ({wrapped.action.order} views)"
        rates: dict[str, float] = {}
        for key, count in (("one", 1), ("vector", n)):
            rate, mem = _train_rate(plain, make_env, fine, args.dqn_steps, False, count)
            rates[key] = rate
            rows.append([env, "collection, no updates", "vanilla", str(count), f"{rate:,.0f}",
                         f"{mem:,.0f}"])
        for key, model, label in (("train", plain, "vanilla"), ("train_wrapped", wrapped, name)):
            rate, mem = _train_rate(model, make_env, fine, args.dqn_steps, True, n)
            rates[key] = rate
            rows.append([env, "training (finetuning settings)", label, str(n), f"{rate:,.0f}",
                         f"{mem:,.0f}"])
        episodes = args.dqn_eval_episodes or int(fine.eval_episodes)
        for key, model, label, batched in (("eval", plain, "vanilla", True),
                                           ("eval_wrapped", wrapped, name, True),
                                           ("eval_single", wrapped, name, False)):
            rate, steps = _eval_rate(model, make_env, episodes, args.dqn_steps, batched)
            rates[key] = rate
            how = "side by side" if batched else "one episode at a time"
            rows.append([env, f"evaluation, {how} ({steps:,} steps)", label,
                         str(episodes if batched else 1), f"{rate:,.0f}", ""])
        notes.append(
            f"- {env}: backbone `{backbone.name}`, batch {fine.batch_size}, "
            f"{fine.get('gradient_steps', 1)} update(s) per {fine.train_frequency} env steps "
            f"from step {min(int(fine.learning_starts), args.dqn_steps // 4)}. Vectorised "
            f"collection ({n} envs) runs {rates['vector'] / rates['one']:.1f}× one env's; with "
            f"the updates, training runs at {rates['train'] / rates['vector']:.0%} of "
            f"collection speed (the updates dominate); {name} trains "
            f"{rates['train'] / rates['train_wrapped']:.1f}× slower than vanilla; side-by-side "
            f"evaluation runs {rates['eval_wrapped'] / rates['eval_single']:.1f}× faster than "
            "one episode at a time.")
    return Section(
        "DQN: environment steps per second",
        settings=[f"{args.dqn_steps:,} env steps per training/collection measurement, ε = 0.1 "
                  f"(greedy forwards on most steps); CPU, {torch.get_num_threads()} thread(s); "
                  "random-initialised Q-networks on the full (symmetric) distribution",
                  "training rates exclude evaluation; collection = acting + env steps + replay "
                  "writes, no gradient updates; evaluation = all episodes side by side in one "
                  "vector env, one batched greedy forward per step",
                  "peak RSS: the process's high-water mark during the training run (torch "
                  "itself holds most of it)"],
        header=header, rows=rows, notes=notes)
