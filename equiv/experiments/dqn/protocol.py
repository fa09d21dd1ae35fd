"""Deep Q-learning transfer: a DQN pretrained where only some orientations occur, wrapped by a
symmetrizer, evaluated zero-shot and finetuned on the full symmetric distribution.

1. Pretraining (cached, one per seed, shared by every method): vanilla DQN on the restricted
   distribution (``equiv.experiments.dqn.environments``), resumable from its cache folder.
2. The wrapped Q-network's greedy return on fixed evaluation seeds of the full distribution:
   zero-shot (the curve's step 0; for λ-equitune, after its λ phase), then every ``eval_every``
   env steps of DQN finetuning (same budget for every method), resumable from ``progress.pt``
   in the run directory.
Equizero keeps the transformed state with the highest max-Q (proxy ``neg_max_logit``) and maps
its action back by g⁻¹, and is finetuned through that view (``task.equizero_surrogate: chosen``);
equitune averages g⁻¹·Q(g·s); λ-equitune weighs the views by λ of the backbone features.

λ-equitune's λ phase (``method.lambda_phase``, before finetuning, backbone frozen): the
pretrained agent acts ε-greedily on its own, restricted distribution (where its Q-values are the
ones it was trained to get right) and λ is fitted so that the wrapped network reproduces them
there: Huber loss between λ-equitune's Q(s) and the backbone's Q(s). Where a mirrored/rotated
view disagrees with the upright one, this moves λ's weight to the upright view; where they
agree, it does not care. The wrapper is exactly equivariant and the environment symmetric, so
the views of g·s are those of s, permuted: what λ learns on the pretraining orientation is what
it does on every orientation. No evaluation episode and no full-distribution step is used. The
return is then measured on the full distribution, and finetuning trains λ with the backbone
(``method.freeze_lambda: false``) or the backbone alone (``true``). The λ-network's dropout
(``method.dropout``) acts in the λ phase, a supervised regression, but not in finetuning's TD
loss: there the online Q is regressed onto targets of the eval-mode network and acts in eval
mode, and dropout on λ made the regressed Q a random mixture of the views (CartPole seed 1:
TD loss 0.01-0.04 instead of 0.002-0.005, finetuned return 406 instead of 500).

Canonicalization (``method=canonicalize``) uses the same restricted experience: its prior phase
teaches the canonicalizer that those states are canonical (the zero-shot column: an equivariant
canonicalizer then maps a mirrored or rotated state to its restricted view), its canonicalizer
phase adds the Huber loss to the backbone's Q-values there, backbone frozen. Finetuning is the
TD loss through the selected view (straight-through for the canonicalizer), without the prior
term: the DQN trainer takes one loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from equiv.checkpoints import fingerprint
from equiv.experiment import Outcome, RunContext, phases_run
from equiv.experiments.canonicalizer_phases import canonicalizer_seed, train_canonicalizer
from equiv.experiments.dqn.environments import env_factory
from equiv.instantiate import build, build_method
from equiv.methods import Canonicalize
from equiv.methods.lambda_equitune import LambdaEquitune
from equiv.pretraining import backbone_key, cached_pretrain, config_hash
from equiv.rl import DQNConfig, collect_transitions, evaluate, td_loss, train_dqn
from equiv.train_state import PROGRESS_FILE, TrainState, read_progress
from equiv.training import check_finite, derived_generator, with_own_lr


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_qnet(cfg: DictConfig, env_fn: Any) -> nn.Module:
    """The Q-network ``cfg.backbone`` names, for the environment's observations and actions."""
    env = env_fn()
    obs_shape, n_actions = tuple(env.observation_space.shape), int(env.action_space.n)
    env.close()
    return build(cfg.backbone, "backbone", obs_shape=obs_shape, n_actions=n_actions)


def resumable(path: Path, config: str, force: bool) -> dict[str, Any]:
    """``train_dqn``'s checkpoint arguments: resume from the progress ``config`` saved at
    ``path`` (if any), and save there at every checkpoint."""
    def save(state: TrainState) -> None:
        state.save(path, config)
    return {"resume_from": read_progress(path, config, force), "on_checkpoint": save}


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
        report = train_dqn(model, pretrain_env, dqn, task.pretrain.seed,
                           **resumable(folder / PROGRESS_FILE, config_hash(key), bool(cfg.force)))
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
    model = build_method(cfg.method, qnet, build(cfg.group, "group"), optional={
        "input_shape": obs_shape, "in_features": obs_shape[0], "in_channels": obs_shape[0],
        "seed": canonicalizer_seed(ctx.seed)}).to(ctx.device)

    dqn = DQNConfig(**_plain(task.finetune.dqn))
    m = out.metrics
    phases = None
    if isinstance(model, Canonicalize):
        phases = CanonicalizerPhases(model, qnet, cfg, ctx)
        phases.prior(out)
    m["return_zero_shot"], _ = evaluate(model, env_fn, dqn.eval_seeds())
    params, held = None, []                         # all of the model's, none held in eval
    if isinstance(model, LambdaEquitune):
        held = [model.lambda_net]       # no λ dropout in the TD loss (module docstring: why)
        if cfg.method.lambda_phase.steps > 0:
            lambda_phase(model, qnet, cfg, ctx, out)
            m["return_lambda_phase"], _ = evaluate(model, env_fn, dqn.eval_seeds())
        if cfg.method.freeze_lambda:
            lam = {id(p) for p in model.lambda_net.parameters()}
            params = [p for p in model.parameters() if id(p) not in lam]
    if phases is not None:
        if cfg.method.canonicalizer_phase.steps > 0:
            phases.task(out)
            m["return_canonicalizer_phase"], _ = evaluate(model, env_fn, dqn.eval_seeds())
        canonicalizer = list(model.canonicalizer.parameters())
        ids = {id(p) for p in canonicalizer}
        others = [p for p in model.parameters() if id(p) not in ids]
        if cfg.method.freeze_canonicalizer:
            params = others
        elif cfg.method.canonicalizer_lr is not None:
            params = with_own_lr(others, canonicalizer, cfg.method.canonicalizer_lr)
    # The return curve starts where finetuning starts (after the λ or canonicalizer phase).
    out.add_point("return", 0, m.get("return_lambda_phase", m.get("return_canonicalizer_phase",
                                                                   m["return_zero_shot"])))
    if task.finetune.enabled:
        def on_eval(step: int, mean: float, _: list[float]) -> None:
            ctx.logger.log_metrics({"return": mean}, step=step)

        report = train_dqn(model, env_fn, DQNConfig(**{**_plain(task.finetune.dqn),
                                                       "eval_at_start": False}),
                           ctx.seed, params=params, eval_modules=held, on_eval=on_eval,
                           **resumable(ctx.run_dir / PROGRESS_FILE, fingerprint(_plain(cfg)),
                                       bool(cfg.force)))
        out.curves["return"] += report["curve"]      # the trainer's curve survives a resume
        m["return_finetuned"] = report["final_return"]
        if phases is not None:
            m["finetuned_upright_identity"] = model.identity_share(phases.probe)
        m["train_steps_per_second"] = report["steps_per_second"]
        out.curves["train_episode_return"] = report["train_episodes"]
        out.curves["td_loss"] = report["td_loss"]
    (ctx.run_dir / PROGRESS_FILE).unlink(missing_ok=True)
    out.summary = summary_lines(out, cfg)
    return out


def lambda_phase(model: LambdaEquitune, qnet: nn.Module, cfg: DictConfig, ctx: RunContext,
                 out: Outcome) -> None:
    """Fit λ alone (backbone frozen) so that the wrapper reproduces the pretrained Q-values on
    the pretrained agent's own experience (module docstring: why).

    Data: ``min(steps·batch_size, finetune buffer_size)`` transitions of the pretrained agent on
    the restricted distribution, ε = the finetuning's ``eps_start``, env seeds derived from the
    run seed (never the evaluation seeds). The backbone's features of all |G| views and its
    Q-values are computed once; each step is an Adam step (``lambda_phase.lr``) on a batch of
    ``lambda_phase.batch_size`` of them, gradients for λ's parameters only. Recorded about 20
    times: the phase's loss (mean since the previous point) and, as a diagnostic, the TD loss
    of the wrapped network (eval mode, as its own target) on a fixed probe of the transitions.
    Deterministic given the seed, so a resumed run redoes it identically.
    """
    lp, task = cfg.method.lambda_phase, cfg.task
    ft = DQNConfig(**_plain(task.finetune.dqn))
    gen = derived_generator(ctx.seed, "dqn_lambda_phase")
    env_seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    torch.manual_seed(env_seed)                     # dropout in the λ-network
    restricted = env_factory(task.env, task.env_kwargs, restricted=True)
    n = min(lp.steps * lp.batch_size, ft.buffer_size)
    data = collect_transitions(qnet, restricted, n, num_envs=ft.num_envs, epsilon=ft.eps_start,
                               seed=env_seed)
    order = model.action.order
    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats = model.stacked_features(data.obs).view(order, n, -1)      # [G, N, D]
        target = qnet(data.obs)                                          # [N, A]
    probe = type(data)(*(t[:1024] for t in data))
    lam = list(model.lambda_net.parameters())
    optimizer = torch.optim.Adam(lam, lr=lp.lr)
    every = max(1, lp.steps // 20)
    losses: list[dict[str, float]] = []
    td: list[dict[str, float]] = []

    def probe_td(step: int) -> None:
        with torch.no_grad():
            loss = td_loss(model, model, probe, ft.gamma, huber_delta=ft.huber_delta,
                           double_dqn=ft.double_dqn)
        td.append({"step": step, "value": float(loss)})

    probe_td(0)
    running, last = 0.0, 0
    for step in range(1, lp.steps + 1):
        idx = torch.randint(n, (lp.batch_size,), generator=gen)
        model.lambda_net.train()
        q = model.combine_features(feats[:, idx].reshape(order * lp.batch_size, -1))
        loss = F.huber_loss(q, target[idx], delta=ft.huber_delta)
        check_finite(loss, step, "the λ phase")
        for p, g in zip(lam, torch.autograd.grad(loss, lam), strict=True):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running += float(loss.detach())
        if step % every == 0 or step == lp.steps:
            losses.append({"step": step, "value": running / (step - last)})
            running, last = 0.0, step
            model.eval()
            probe_td(step)
    model.train(was_training)
    out.curves["lambda_phase_loss"] = losses
    out.curves["lambda_phase_td_loss"] = td
    with torch.no_grad():
        model.eval()
        weights = model.lambda_weights(probe.obs)                       # [B, |G|]
        model.train(was_training)
    out.extra["lambda_phase"] = {"transitions": n, "steps": lp.steps, "env_seed": env_seed,
                                 "mean_weight_per_view": weights.mean(dim=0).tolist()}


class CanonicalizerPhases:
    """The canonicalizer's phases on the pretrained agent's restricted experience (module
    docstring): ``min(steps·batch_size, finetune buffer_size)`` states of the larger phase,
    collected as the λ phase collects them, with the backbone's Q-values computed once."""

    def __init__(self, model: Canonicalize, qnet: nn.Module, cfg: DictConfig,
                 ctx: RunContext) -> None:
        method, task = cfg.method, cfg.task
        ft = DQNConfig(**_plain(task.finetune.dqn))
        self.model, self.method, self.huber_delta = model, method, ft.huber_delta
        self.gen = derived_generator(ctx.seed, "dqn_canonicalizer_phases")
        env_seed = int(torch.randint(2**31 - 1, (1,), generator=self.gen))
        torch.manual_seed(env_seed)
        restricted = env_factory(task.env, task.env_kwargs, restricted=True)
        budget = max(ph.steps * ph.batch_size
                     for ph in (method.prior_phase, method.canonicalizer_phase))
        self.n = min(max(budget, 1), ft.buffer_size)
        data = collect_transitions(qnet, restricted, self.n, num_envs=ft.num_envs,
                                   epsilon=ft.eps_start, seed=env_seed)
        self.obs = data.obs
        with torch.no_grad():
            self.target = qnet(self.obs)
        self.probe = self.obs[:1024]
        self.idx = torch.zeros(0, dtype=torch.long)

    def _upright(self, batch_size: int):
        def draw() -> torch.Tensor:
            self.idx = torch.randint(self.n, (batch_size,), generator=self.gen)
            return self.obs[self.idx]
        return draw

    def prior(self, out: Outcome) -> None:
        ph = self.method.prior_phase
        train_canonicalizer(self.model, self._upright(ph.batch_size), ph.steps, ph.lr,
                            desc="prior phase")
        out.metrics["zero_shot_upright_identity"] = self.model.identity_share(self.probe)

    def task(self, out: Outcome) -> None:
        ph = self.method.canonicalizer_phase

        def task_loss() -> torch.Tensor:
            return F.huber_loss(self.model(self.obs[self.idx]), self.target[self.idx],
                                delta=self.huber_delta)

        train_canonicalizer(self.model, self._upright(ph.batch_size), ph.steps, ph.lr,
                            desc="canonicalizer phase", task_loss=task_loss)
        out.metrics["canonicalizer_phase_upright_identity"] = \
            self.model.identity_share(self.probe)


def summary_lines(out: Outcome, cfg: DictConfig) -> list[tuple[str, str]]:
    m, n = out.metrics, cfg.task.finetune.dqn.eval_episodes
    lines = []
    if "pretrained_return" in m:
        lines.append(("pretrained DQN, return on its own (restricted) distribution",
                      f"{m['pretrained_return']:.3f}"))
    lines.append((f"zero-shot return on the full distribution ({n} episodes)",
                  f"{m['return_zero_shot']:.3f}"))
    lines += [(f"  {label}", f"{m[f'return_{phase}']:.3f}")
              for label, phase in phases_run(m, cfg.method, "return_{}")]
    if "return_finetuned" in m:
        lines.append((f"after {cfg.task.finetune.dqn.total_steps} env steps of finetuning",
                      f"{m['return_finetuned']:.3f}"))
    return lines
