"""Deep Q-learning transfer: a DQN pretrained where only some orientations occur, wrapped by a
symmetrizer, evaluated zero-shot and finetuned on the full symmetric distribution.

1. Pretraining (cached, one per seed, shared by every method): vanilla DQN on the restricted
   distribution (``experiments.dqn.environments``), resumable from its cache folder.
2. The wrapped Q-network's greedy return on fixed evaluation seeds of the full distribution:
   zero-shot (the curve's step 0), then every ``eval_every`` env steps of DQN finetuning (same
   budget for every method), resumable from ``progress.pt`` in the run directory.
Equizero keeps the transformed state with the highest max-Q (proxy ``neg_max_logit``) and maps
its action back by g⁻¹, and is finetuned through that view (``task.equizero_surrogate: chosen``);
equitune averages g⁻¹·Q(g·s); λ-equitune weighs the views by λ of the backbone features (λ
learns during finetuning, jointly with the backbone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from equiv.backbones.qnets import QCNN, QMLP
from equiv.checkpoints import PROGRESS_FILE, check_finite_weights, fingerprint, load_progress
from equiv.experiment import Outcome, RunContext
from equiv.groups import GroupAction, make_action
from equiv.methods import build_method
from equiv.pretraining import backbone_key, cached_pretrain, config_hash, save_atomic
from equiv.rl import DQNConfig, evaluate, train_dqn
from experiments.dqn.environments import env_factory


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_qnet(cfg: DictConfig, env_fn: Any) -> nn.Module:
    env = env_fn()
    obs_shape, n_actions = env.observation_space.shape, int(env.action_space.n)
    env.close()
    b = cfg.backbone
    if b.kind == "mlp":
        return QMLP(int(obs_shape[0]), n_actions, hidden=tuple(b.hidden))
    return QCNN(int(obs_shape[0]), int(obs_shape[1]), n_actions, channels=tuple(b.channels),
                hidden=b.hidden)


def group_action(cfg: DictConfig) -> GroupAction:
    if cfg.group.name == "trivial":
        return make_action("trivial")
    from equiv.envs import make_env_action

    return make_env_action(cfg.group.name)


def _resumable(path: Path, config: str, force: bool) -> tuple[dict[str, Any] | None, Any]:
    """The saved trainer state at ``path`` if it belongs to this configuration, and a saver
    (which refuses to replace the last good file by non-finite weights)."""
    saved = load_progress(path, config, force=force)
    state = None if saved is None else saved["trainer"]

    def save(trainer_state: dict[str, Any]) -> None:
        check_finite_weights(trainer_state["online"], trainer_state.get("step"))
        save_atomic({"config": config, "trainer": trainer_state}, path)
    return state, save


def pretrained_qnet(cfg: DictConfig, ctx: RunContext, out: Outcome) -> nn.Module:
    task = cfg.task
    pretrain_env = env_factory(task.env, task.env_kwargs, restricted=True)
    torch.manual_seed(task.pretrain.seed)
    qnet = build_qnet(cfg, pretrain_env).to(ctx.device)
    if not cfg.backbone.pretrained:
        out.extra["pretrain"] = None
        return qnet
    dqn = DQNConfig(**_plain(task.pretrain.dqn))
    key = {"env": task.env, "env_kwargs": _plain(task.env_kwargs),
           "backbone": backbone_key(_plain(cfg.backbone)), "pretrain": _plain(task.pretrain)}

    def train(model: nn.Module, folder: Path) -> dict[str, Any]:
        resume, save = _resumable(folder / PROGRESS_FILE, config_hash(key), bool(cfg.force))
        report = train_dqn(model, pretrain_env, dqn, task.pretrain.seed, on_checkpoint=save,
                           resume_from=resume)
        (folder / PROGRESS_FILE).unlink(missing_ok=True)     # its replay buffer is ~30 MB
        return {k: report[k] for k in ("final_return", "best_return", "best_step", "curve",
                                       "env_steps", "updates", "steps_per_second")}

    meta, path = cached_pretrain(ctx.cache_dir, f"dqn-{task.env}-{cfg.backbone.name}", key,
                                 qnet, train, checkpoint=cfg.backbone.get("checkpoint"))
    out.extra["pretrain"] = {**meta, "checkpoint": str(path)}
    # The reference return in the restricted setting, on the finetuning's evaluation seeds: with
    # keep_best the cached weights won a selection on pretraining's own episodes, whose return
    # would overstate them.
    seeds = DQNConfig(**_plain(task.finetune.dqn)).eval_seeds()
    out.metrics["pretrained_return"], _ = evaluate(qnet, pretrain_env, seeds)
    return qnet


def run(cfg: DictConfig, ctx: RunContext) -> Outcome:
    task, out = cfg.task, Outcome()
    qnet = pretrained_qnet(cfg, ctx, out)
    env_fn = env_factory(task.env, task.env_kwargs, restricted=False)
    torch.manual_seed(ctx.seed)
    obs_shape = tuple(env_fn().observation_space.shape)
    model = build_method(_plain(cfg.method), qnet, group_action(cfg), obs_shape).to(ctx.device)

    dqn = DQNConfig(**_plain(task.finetune.dqn))
    m = out.metrics
    m["return_zero_shot"], _ = evaluate(model, env_fn, dqn.eval_seeds())
    out.add_point("return", 0, m["return_zero_shot"])
    if task.finetune.enabled:
        resume, save = _resumable(ctx.run_dir / PROGRESS_FILE, fingerprint(_plain(cfg)),
                                  bool(cfg.force))

        def on_eval(step: int, mean: float, _: list[float]) -> None:
            ctx.logger.log_metrics({"return": mean}, step=step)

        report = train_dqn(model, env_fn, DQNConfig(**{**_plain(task.finetune.dqn),
                                                       "eval_at_start": False}),
                           ctx.seed, on_eval=on_eval, on_checkpoint=save, resume_from=resume)
        out.curves["return"] += report["curve"]      # the trainer's curve survives a resume
        m["return_finetuned"] = report["final_return"]
        m["train_steps_per_second"] = report["steps_per_second"]
        out.curves["train_episode_return"] = report["train_episodes"]
        out.curves["td_loss"] = report["td_loss"]
    (ctx.run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    out.summary = summary_lines(out, cfg)
    return out


def summary_lines(out: Outcome, cfg: DictConfig) -> list[tuple[str, str]]:
    m, n = out.metrics, cfg.task.finetune.dqn.eval_episodes
    lines = []
    if "pretrained_return" in m:
        lines.append(("pretrained DQN, return on its own (restricted) distribution",
                      f"{m['pretrained_return']:.3f}"))
    lines.append((f"zero-shot return on the full distribution ({n} episodes)",
                  f"{m['return_zero_shot']:.3f}"))
    if "return_finetuned" in m:
        lines.append((f"after {cfg.task.finetune.dqn.total_steps} env steps of finetuning",
                      f"{m['return_finetuned']:.3f}"))
    return lines
