"""DQN (optionally Double DQN) around an arbitrary Q-network module, resumable bit for bit.

The Q-function is any ``nn.Module`` mapping float32 observations ``[B, *obs_shape]`` to
Q-values ``[B, n_actions]``: a plain :class:`~equiv.backbones.qnets.QMLP`, or a symmetrizer
wrapped around a pretrained one (``Equitune``, ``Equizero``, ...). Such wrappers may compute
different things in ``train()`` and ``eval()`` mode (Equizero's straight-through gradient), so
the trainer is explicit about modes:

- **acting and evaluation** use ``eval()`` under ``no_grad``: the policy is the function that is
  deployed and reported (Equizero's chosen view, dropout off), and acting must not consume the
  global torch RNG, which keeps data collection identical however the net is built;
- **the TD loss** uses ``train()`` on the online net: that is the mode in which a wrapper
  defines its training gradient (Equizero's surrogate);
- **the target net** is a frozen ``copy.deepcopy`` kept in ``eval()``: it only supplies values.

Vector envs follow gymnasium ≥ 1.0's default ``AutoresetMode.NEXT_STEP``: a step that ends an
episode (terminated *or* truncated) returns the true final observation, and the *next* call to
``step`` on that sub-env ignores its action and returns the first observation of a new episode
with reward 0. That call is not a transition and is never stored, nor counted as an env step.
Truncated steps are stored with ``terminated=False`` (bootstrapped), terminated ones cut the
bootstrap.

Resumes are exact by construction rather than by pickling environments: at every
``cfg.checkpoint_every`` env steps *every* sub-env is reset with a seed derived from
``(seed, checkpoint index)`` (the in-progress episodes are cut; all their transitions are
already stored, and none crosses the cut), and only then is the state snapshotted. A resumed run
redoes that same reset, so it continues exactly like the uninterrupted run, for any
``num_envs``. The price: with checkpointing on, the trajectory depends on ``checkpoint_every``
(not on whether anyone listens to ``on_checkpoint``), and one episode per sub-env is cut per
checkpoint — negligible when ``checkpoint_every`` is much longer than an episode.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import Tensor, nn

from equiv.rl.config import DQNConfig
from equiv.rl.replay import ReplayBuffer, Transitions
from equiv.train_state import TrainState
from equiv.training import check_finite

ParamsOrGroups = Iterable[nn.Parameter] | Sequence[Mapping[str, Any]]

EnvFactory = Callable[[], gym.Env]
QFunction = Callable[[Tensor], Tensor]
EvalCallback = Callable[[int, float, list[float]], None]
CheckpointCallback = Callable[[TrainState], None]

# 3: the state is a TrainState's (train_state.py), the run's identity in its progress.
CHECKPOINT_VERSION = 3


def _device_of(module: Any) -> torch.device:
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


def _as_obs(obs: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(obs, dtype=torch.float32, device=device)


def _discrete_actions(space: gym.Space) -> tuple[int, int]:
    """``(n, start)`` of a Discrete action space; DQN needs one."""
    if not isinstance(space, gym.spaces.Discrete):
        raise TypeError(f"DQN needs a Discrete action space, got {space}")
    return int(space.n), int(space.start)


def _crossed(before: int, after: int, period: int) -> int:
    """How many multiples of ``period`` lie in ``(before, after]``."""
    return max(0, after // period - before // period)


class _Modes:
    """``module.train(flag)`` without its recursive walk, for a module switched every step.

    Acting (eval) and the TD loss (train) alternate at every vector step; ``nn.Module.train``
    walks the tree through ``children()`` and ``__setattr__`` each time, which costs as much as
    a small Q-network's forward. The submodules are listed once and their ``training`` flags set
    directly. A tree in which some class overrides ``train`` falls back to ``module.train``.
    Non-modules (plain Q-functions) have no mode. Submodules in ``held`` stay in eval mode
    whatever the rest does.
    """

    def __init__(self, fn: Any, held: Iterable[nn.Module] = ()) -> None:
        self.module = fn if isinstance(fn, nn.Module) else None
        self.held = [m for h in held for m in h.modules()]
        kept = {id(m) for m in self.held}
        tree = list(self.module.modules()) if self.module is not None else []
        self.plain = all(type(m).train is nn.Module.train for m in tree)
        self.tree = [m for m in tree if id(m) not in kept]

    def set(self, training: bool) -> None:
        if self.module is None:
            return
        if not self.plain:
            self.module.train(training)
        else:
            for m in self.tree:
                object.__setattr__(m, "training", training)
        for m in self.held:
            object.__setattr__(m, "training", False)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode for a block, the former mode restored after it."""
        was_training = self.module is not None and self.module.training
        self.set(False)
        try:
            yield
        finally:
            self.set(was_training)


def _eval_mode(fn: Any) -> contextlib.AbstractContextManager[None]:
    return _Modes(fn).evaluating()


@torch.no_grad()
def evaluate(q_fn: QFunction, make_env: EnvFactory, seeds: Sequence[int], *,
             max_steps: int = 100_000) -> tuple[float, list[float]]:
    """Greedy return of one episode per seed, ``(mean, per-seed returns)``.

    All episodes run side by side in one vector env (one batched forward per step, which
    matters for symmetrizers that already multiply the batch by ``|G|``). Deterministic given
    the seeds: greedy actions, ties broken by the lowest action index. A module is evaluated in
    ``eval()`` mode and given back in its former mode. ``max_steps`` is a safety time limit for
    envs without one; episodes still running then count as truncated.
    """
    if len(seeds) == 0:
        raise ValueError("evaluate needs at least one seed")
    envs = SyncVectorEnv([make_env for _ in seeds], autoreset_mode=AutoresetMode.NEXT_STEP)
    try:
        _, start = _discrete_actions(envs.single_action_space)
        device = _device_of(q_fn)
        returns = np.zeros(len(seeds))
        done = np.zeros(len(seeds), dtype=bool)
        obs, _ = envs.reset(seed=[int(s) for s in seeds])
        with _eval_mode(q_fn):
            for _ in range(max_steps):
                actions = q_fn(_as_obs(obs, device)).argmax(dim=1).cpu().numpy() + start
                obs, rewards, terminated, truncated, _ = envs.step(actions)
                returns[~done] += rewards[~done]    # finished envs are autoresetting: ignore
                done |= terminated | truncated
                if done.all():
                    break
    finally:
        envs.close()
    return float(returns.mean()), [float(r) for r in returns]


@torch.no_grad()
def collect_transitions(q_fn: QFunction, make_env: EnvFactory, n: int, *, num_envs: int = 1,
                        epsilon: float = 0.0, seed: int = 0) -> Transitions:
    """``n`` real transitions of ``q_fn``'s ε-greedy policy, e.g. the experience of a pretrained
    agent on its own distribution. Acting as in :func:`train_dqn` (eval mode, a private
    generator seeded with ``seed``, sub-env ``i`` first reset with ``seed + i``, autoreset steps
    skipped, truncation stored as not terminated); deterministic given its arguments."""
    if n < 1 or num_envs < 1:
        raise ValueError(f"n and num_envs must be >= 1, got {n} and {num_envs}")
    gen = torch.Generator().manual_seed(seed)
    modes = _Modes(q_fn)
    device = _device_of(q_fn)
    envs = SyncVectorEnv([make_env for _ in range(num_envs)],
                         autoreset_mode=AutoresetMode.NEXT_STEP)
    parts: list[tuple[np.ndarray, Tensor, np.ndarray, np.ndarray, np.ndarray]] = []
    try:
        n_actions, start = _discrete_actions(envs.single_action_space)
        obs, _ = envs.reset(seed=_reset_seeds(seed, 0, num_envs))
        autoresetting = np.zeros(num_envs, dtype=bool)
        count = 0
        while count < n:
            actions = _act(q_fn, modes, _as_obs(obs, device), epsilon, gen, n_actions)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions.numpy() + start)
            real = ~autoresetting
            parts.append((obs[real], actions[torch.from_numpy(real)], rewards[real],
                          next_obs[real], terminated[real]))
            count += int(real.sum())
            autoresetting, obs = terminated | truncated, next_obs
    finally:
        envs.close()
    o, a, r, o2, t = (np.concatenate([np.asarray(p[i]) for p in parts])[:n] for i in range(5))
    return Transitions(_as_obs(o, device), torch.as_tensor(a, dtype=torch.int64, device=device),
                       torch.as_tensor(r, dtype=torch.float32, device=device),
                       _as_obs(o2, device), torch.as_tensor(t, dtype=torch.bool, device=device))


def td_loss(q_net: nn.Module, target_net: nn.Module, batch: Transitions, gamma: float, *,
            huber_delta: float = 1.0, double_dqn: bool = False,
            modes: _Modes | None = None) -> Tensor:
    """Huber loss between ``Q(s, a)`` and ``r + γ (1 − terminated) V'(s')``.

    ``V'(s') = max_a Q_target(s', a)`` (DQN), or ``Q_target(s', argmax_a Q(s', a))`` with
    ``double_dqn`` (the online argmax taken in eval mode: it is the greedy policy's choice).
    Truncation is not termination: truncated transitions are stored with ``terminated=False``
    and bootstrap. ``q_net``'s mode is the caller's (the trainer uses ``train()``); ``modes``
    is the trainer's cached mode switch of ``q_net``.
    """
    q = q_net(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
    with torch.no_grad():
        next_q = target_net(batch.next_obs)
        if double_dqn:
            with _eval_mode(q_net) if modes is None else modes.evaluating():
                best = q_net(batch.next_obs).argmax(dim=1)
            next_v = next_q.gather(1, best[:, None]).squeeze(1)
        else:
            next_v = next_q.max(dim=1).values
        target = batch.rewards + gamma * (~batch.terminated).to(next_v.dtype) * next_v
    return F.huber_loss(q, target, delta=huber_delta)


def _reset_seeds(seed: int, segment: int, num_envs: int) -> list[int]:
    """Env seeds of a segment: ``seed + i`` at the start (segment 0), then independent seeds
    derived from ``(seed, segment)`` at each checkpoint."""
    if segment == 0:
        return [seed + i for i in range(num_envs)]
    state = np.random.SeedSequence([seed, segment]).generate_state(num_envs)
    return [int(s) for s in state]


def _param_groups(q_net: nn.Module, params: ParamsOrGroups | None) -> list[dict[str, Any]]:
    """``params`` as optimizer parameter groups, checked: parameters of ``q_net`` that require
    grad, each once (``None``: all of ``q_net``'s that require grad, one group)."""
    if params is None:
        groups = [{"params": [p for p in q_net.parameters() if p.requires_grad]}]
    else:
        given = list(params)
        groups = ([dict(g) for g in given] if given and isinstance(given[0], Mapping)
                  else [{"params": given}])
    own = {id(p) for p in q_net.parameters()}
    seen: set[int] = set()
    for group in groups:
        kept = []
        for p in group["params"]:
            if id(p) not in own:
                raise ValueError("params must be parameters of q_net (the target net copies "
                                 "q_net)")
            if not p.requires_grad:
                raise ValueError("every parameter in params must require grad")
            if id(p) not in seen:
                seen.add(id(p))
                kept.append(p)
        group["params"] = kept
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters")
    return groups


def train_dqn(q_net: nn.Module, make_env: EnvFactory, cfg: DQNConfig, seed: int, *,
              params: ParamsOrGroups | None = None,
              eval_modules: Sequence[nn.Module] = (),
              on_eval: EvalCallback | None = None,
              on_checkpoint: CheckpointCallback | None = None,
              resume_from: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``q_net`` in place with ε-greedy DQN on ``cfg.num_envs`` copies of ``make_env()``.

    ``params``: the parameters to train (default: all of ``q_net``'s that require grad), e.g. a
    backbone without its λ-network; the others stay fixed (and get no ``.grad``). Parameter
    groups (dicts with ``params`` and e.g. their own ``lr``) work as in ``torch.optim``.
    ``eval_modules``: submodules of ``q_net`` that stay in eval mode in the TD loss too (e.g. a
    λ-network's dropout, which would make the regressed Q differ from the Q that acts and
    bootstraps).
    ``on_eval(step, mean_return, returns)`` runs after each evaluation (step 0 when
    ``cfg.eval_at_start``, every ``cfg.eval_every`` env steps, and at the end).
    ``on_checkpoint(state)`` gets the live :class:`~equiv.train_state.TrainState` every
    ``cfg.checkpoint_every`` env steps (save it with ``state.save``, or copy
    ``state.state_dict()``, before returning); pass that state dict back as ``resume_from``
    (same ``cfg``, ``seed``, ``make_env``, architecture and ``params``) to finish the run
    exactly as if it had never stopped (on CPU).

    Seeds ``torch.manual_seed(seed)`` (global RNG: dropout in the loss, if any); a private
    generator drives ε draws, random actions and replay sampling; sub-env ``i`` is first reset
    with ``seed + i``. Runs on ``q_net``'s device (the replay buffer too). ``q_net`` is given
    back in the mode it came in.

    With ``cfg.keep_best``, ``q_net`` ends with the weights of its best evaluation (the latest
    among equal means) instead of its last ones: DQN's greedy return swings from one
    evaluation to the next, and a pretrained model should be its best policy, chosen on the
    pretraining distribution's own evaluation episodes.

    Returns ``curve`` (``[{"step", "value"}]``, mean greedy eval return), ``final_return``,
    ``final_returns`` (per eval seed; both of the last evaluation), ``best_return`` and
    ``best_step`` (the best evaluation), ``train_episodes`` (``[{"step", "value"}]``, undiscounted
    training-episode returns, ε-greedy), ``td_loss`` (``[{"step", "value"}]``, the mean TD loss
    of the updates since the previous evaluation, at each evaluation), ``env_steps``,
    ``updates``, ``steps_per_second`` (training env steps per second of wall time outside
    evaluation, this session).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    was_training = q_net.training
    own = {id(m) for m in q_net.modules()}
    if any(id(m) not in own for m in eval_modules):
        raise ValueError("eval_modules must be submodules of q_net")
    modes = _Modes(q_net, eval_modules)
    device = _device_of(q_net)
    groups = _param_groups(q_net, params)
    trained = [p for group in groups for p in group["params"]]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    envs = SyncVectorEnv([make_env for _ in range(cfg.num_envs)],
                         autoreset_mode=AutoresetMode.NEXT_STEP)
    try:
        n_actions, start = _discrete_actions(envs.single_action_space)
        obs_shape = envs.single_observation_space.shape
        if obs_shape is None:
            raise TypeError(f"DQN needs an array observation space, got "
                            f"{envs.single_observation_space}")
        target = copy.deepcopy(q_net).eval().requires_grad_(False)
        buffer = ReplayBuffer(cfg.buffer_size, obs_shape, device)
        optimizer = torch.optim.Adam(groups, lr=cfg.lr)

        state = TrainState({"online": q_net, "target": target, "optimizer": optimizer,
                            "buffer": buffer, "generator": gen}, _new_progress(cfg, seed))
        if resume_from is not None:
            _check_compatible(resume_from, cfg, seed)
            state.load_state_dict(resume_from)
        # Counters are copied back into the state at each checkpoint; the lists are the state's.
        progress = state.progress
        step, updates, segment = state.step, progress["updates"], progress["segment"]
        curve, train_episodes = progress["curve"], progress["train_episodes"]
        td_curve, best = progress["td_loss"], progress["best"]
        td_running = progress["td_running"]     # TD-loss sum and count since the last evaluation

        def run_eval() -> None:
            mean, progress["last_returns"] = evaluate(q_net, make_env, cfg.eval_seeds())
            curve.append({"step": step, "value": mean})
            if td_running[1]:
                td_curve.append({"step": step, "value": td_running[0] / td_running[1]})
                td_running[:] = [0.0, 0]
            if mean >= best["value"]:
                best.update(step=step, value=mean, state=copy.deepcopy(q_net.state_dict())
                            if cfg.keep_best else None)
            if on_eval is not None:
                on_eval(step, mean, progress["last_returns"])

        obs, _ = envs.reset(seed=_reset_seeds(seed, segment, cfg.num_envs))
        _check_output(q_net, obs, device, n_actions)
        if resume_from is None and cfg.eval_at_start:
            run_eval()

        episode_return = np.zeros(cfg.num_envs)
        autoresetting = np.zeros(cfg.num_envs, dtype=bool)   # next step() is a reset, not a move
        session_steps, pause, started = 0, 0.0, time.perf_counter()
        while step < cfg.total_steps:
            actions = _act(q_net, modes, _as_obs(obs, device), cfg.epsilon(step), gen,
                           n_actions)
            next_obs, rewards, terminated, truncated, _ = envs.step(actions.numpy() + start)
            real = ~autoresetting
            if real.any():
                buffer.add_batch(obs[real], actions[torch.from_numpy(real)], rewards[real],
                                 next_obs[real], terminated[real])
            episode_return[real] += rewards[real]
            finished = terminated | truncated     # True only on real steps (resets are False)
            before, step = step, step + int(real.sum())
            session_steps += int(real.sum())
            for i in np.flatnonzero(finished):
                train_episodes.append({"step": step, "value": float(episode_return[i])})
                episode_return[i] = 0.0
            autoresetting, obs = finished, next_obs

            update_from = max(before, cfg.learning_starts - 1)
            for _ in range(cfg.gradient_steps * _crossed(update_from, step, cfg.train_frequency)):
                td_running[0] += _update(q_net, modes, target, optimizer, trained,
                                         buffer.sample(cfg.batch_size, gen), cfg, updates)
                td_running[1] += 1
                updates += 1
            for _ in range(_crossed(update_from, step, cfg.target_update_period)):
                _update_target(target, q_net, cfg.tau)

            paused = time.perf_counter()
            if _crossed(before, step, cfg.eval_every) and step < cfg.total_steps:
                run_eval()
            if (cfg.checkpoint_every is not None and step < cfg.total_steps
                    and _crossed(before, step, cfg.checkpoint_every)):
                segment += 1
                obs, _ = envs.reset(seed=_reset_seeds(seed, segment, cfg.num_envs))
                episode_return[:] = 0.0
                autoresetting[:] = False
                if on_checkpoint is not None:
                    state.step = step
                    progress.update(updates=updates, segment=segment)
                    on_checkpoint(state)
            pause += time.perf_counter() - paused

        train_time = time.perf_counter() - started - pause
        if not curve or curve[-1]["step"] != step:
            run_eval()
        if cfg.keep_best:
            q_net.load_state_dict(best["state"])
    finally:
        envs.close()
        q_net.train(was_training)
    return {
        "curve": curve,
        "final_return": curve[-1]["value"],
        "final_returns": progress["last_returns"],
        "best_return": best["value"],
        "best_step": best["step"],
        "train_episodes": train_episodes,
        "td_loss": td_curve,
        "env_steps": step,
        "updates": updates,
        "steps_per_second": session_steps / train_time if train_time > 0 else math.nan,
    }


@torch.no_grad()
def _act(q_net: QFunction, modes: _Modes, obs: Tensor, epsilon: float, gen: torch.Generator,
         n_actions: int) -> Tensor:
    """ε-greedy actions ``[num_envs]`` (CPU, 0-based). The generator is consumed the same way
    whatever ε is, and the greedy forward (eval mode) draws nothing, so the random stream
    depends only on the number of steps."""
    n = obs.shape[0]
    explore = torch.rand(n, generator=gen) < epsilon
    random_actions = torch.randint(n_actions, (n,), generator=gen)
    if bool(explore.all()):
        return random_actions
    with modes.evaluating():
        greedy = q_net(obs).argmax(dim=1).cpu()
    return torch.where(explore, random_actions, greedy)


def _update(q_net: nn.Module, modes: _Modes, target: nn.Module,
            optimizer: torch.optim.Optimizer, params: list[nn.Parameter], batch: Transitions,
            cfg: DQNConfig, index: int) -> float:
    """One Adam step on the TD loss, online net in train mode; returns the loss. Gradients are
    taken only for ``params`` (``autograd.grad``), so frozen parameters accumulate nothing."""
    modes.set(True)
    loss = td_loss(q_net, target, batch, cfg.gamma, huber_delta=cfg.huber_delta,
                   double_dqn=cfg.double_dqn, modes=modes)
    check_finite(loss, index, "DQN updates")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    if cfg.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def _update_target(target: nn.Module, online: nn.Module, tau: float) -> None:
    if tau >= 1.0:
        target.load_state_dict(online.state_dict())
        return
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


@torch.no_grad()
def _check_output(q_net: nn.Module, obs: np.ndarray, device: torch.device,
                  n_actions: int) -> None:
    with _eval_mode(q_net):
        out = q_net(_as_obs(obs, device))
    if tuple(out.shape) != (obs.shape[0], n_actions):
        raise ValueError(f"q_net maps a batch of {obs.shape[0]} observations to shape "
                         f"{tuple(out.shape)}, expected ({obs.shape[0]}, {n_actions})")


def _new_progress(cfg: DQNConfig, seed: int) -> dict[str, Any]:
    """A fresh run's progress: the run's identity (checked on resume), counters and curves."""
    return {"version": CHECKPOINT_VERSION, "config": dataclasses.asdict(cfg), "seed": seed,
            "updates": 0, "segment": 0, "curve": [], "train_episodes": [], "td_loss": [],
            "td_running": [0.0, 0], "last_returns": [],
            "best": {"step": -1, "value": -math.inf, "state": None}}


def _check_compatible(saved: Mapping[str, Any], cfg: DQNConfig, seed: int) -> None:
    state = saved.get("progress") or {}
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')!r}, "
                         f"expected {CHECKPOINT_VERSION}")
    if int(state["seed"]) != seed:
        raise ValueError(f"checkpoint was written with seed {state['seed']}, not {seed}")
    saved = dict(state["config"])
    current = dataclasses.asdict(cfg)
    diff = sorted(k for k in current.keys() | saved.keys() if saved.get(k) != current.get(k))
    if diff:
        raise ValueError(f"checkpoint config differs in {', '.join(diff)}; an exact resume "
                         f"needs the same DQNConfig")
