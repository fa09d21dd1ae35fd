"""Environments and their symmetries: gymnasium API, layout sampling, start regions, and dynamics
that commute with every group element, ``step(g·s, g·a) = g·step(s, a)``."""

from __future__ import annotations

import importlib
import itertools
import math
import warnings
from collections import Counter, deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import equiv.envs
from equiv.envs import (
    ENV_SYMMETRIES,
    GRIDWORLD_ID,
    PRESETS,
    GridworldEnv,
    Layout,
    make_env_action,
    make_start_env,
    symmetric_regions,
    transform_action,
    transform_state,
)
from equiv.groups.permutation import LastDimPermutation, power_table

SYMMETRIES = sorted(ENV_SYMMETRIES)
GRID = "grid_rot90"


def reachable(layout: Layout) -> bool:
    """Independent BFS (not the environment's) from the agent to the goal."""
    n, blocked = layout.size, set(layout.obstacles)
    seen, queue = {layout.agent}, deque([layout.agent])
    while queue:
        r, c = queue.popleft()
        for nxt in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nxt[0] < n and 0 <= nxt[1] < n and nxt not in blocked and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return layout.goal in seen


def act(rep, x: np.ndarray, g: int) -> np.ndarray:
    """A representation applied to one numpy example."""
    return rep.apply(torch.from_numpy(x)[None], torch.tensor([g]))[0].numpy()


# --------------------------------------------------------------------------- gymnasium API


@pytest.mark.parametrize(("size", "n_obstacles", "render_mode"),
                         [(5, 3, None), (3, 2, None), (8, 10, "ansi")])
def test_check_env_passes(size, n_obstacles, render_mode):
    env = gym.make(GRIDWORLD_ID, size=size, n_obstacles=n_obstacles,
                   render_mode=render_mode).unwrapped       # with a spec: render modes checked
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    assert env.observation_space.shape == (3, size, size)
    assert env.action_space.n == 4


def test_registration_is_idempotent():
    importlib.reload(equiv.envs)
    equiv.envs.register()
    env = gym.make(GRIDWORLD_ID, size=6, n_obstacles=2)
    assert env.spec.id == GRIDWORLD_ID
    assert isinstance(env.unwrapped, GridworldEnv) and env.unwrapped.size == 6
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 6, 6) and obs.dtype == np.float32


def test_reset_is_seeded_and_takes_explicit_layouts():
    env = GridworldEnv()
    first = [env.reset(seed=s)[0] for s in range(5)]
    again = [env.reset(seed=s)[0] for s in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({a.tobytes() for a in first}) == 5
    obs, _ = env.reset(options={"layout": {"agent": (4, 0), "goal": (0, 4),
                                           "obstacles": [(2, 2), (1, 3)]}})
    assert env.layout == Layout(5, (4, 0), (0, 4), ((1, 3), (2, 2)))
    assert obs[0, 4, 0] == obs[1, 0, 4] == obs[2, 2, 2] == obs[2, 1, 3] == 1
    assert obs.sum() == 4
    for bad in ({"agent": (5, 0), "goal": (0, 0)}, {"agent": (1, 1), "goal": (1, 1)},
                {"agent": (1, 1), "goal": (0, 0), "obstacles": [(1, 1)]},
                {"agent": (1, 1), "goal": (0, 0), "obstacles": [(0, 0)]}):
        with pytest.raises(ValueError):
            env.reset(options={"layout": bad})


def test_step_rules():
    env = GridworldEnv(size=5, max_steps=3)
    corner = {"agent": (0, 0), "goal": (0, 2), "obstacles": [(1, 0)]}
    env.reset(options={"layout": corner})
    for blocked in (0, 3, 2):                       # wall up, wall left, obstacle below
        _, reward, terminated, truncated, _ = env.step(blocked)
        assert env.layout.agent == (0, 0) and reward == -0.01 and not terminated
    assert truncated                                # the third step hits max_steps=3
    env.reset(options={"layout": corner})
    assert env.step(1)[1:4] == (-0.01, False, False) and env.layout.agent == (0, 1)
    assert env.step(1)[1:3] == (1.0, True) and env.layout.agent == (0, 2)
    assert GridworldEnv(size=5).max_steps == 100


# --------------------------------------------------------------------------- layout sampling


def test_sampled_layouts_are_solvable():
    size, n_obstacles = 4, 6
    rng = np.random.default_rng(0)
    unsolvable = 0
    for _ in range(300):                            # a sampler without rejection would fail
        cells = [divmod(int(i), size) for i in rng.choice(size * size, n_obstacles + 2, False)]
        unsolvable += not reachable(Layout(size, cells[0], cells[1], tuple(cells[2:])))
    assert unsolvable > 30
    env = GridworldEnv(size=size, n_obstacles=n_obstacles)
    for seed in range(300):
        env.reset(seed=seed)
        layout = env.layout
        assert reachable(layout) and layout.agent != layout.goal
        assert len(set(layout.obstacles)) == n_obstacles
        assert not {layout.agent, layout.goal} & set(layout.obstacles)


@pytest.mark.parametrize("size", [5, 6])
def test_quadrant_goal_region(size):
    """Goals in the top-left ⌈N/2⌉×⌈N/2⌉ block, whose four rotations cover the grid."""
    env = GridworldEnv(size=size, goal_region="quadrant")
    half = (size + 1) // 2
    agents, goals = set(), set()
    for seed in range(200):
        env.reset(seed=seed)
        r, c = env.layout.goal
        assert r < half and c < half
        assert reachable(env.layout)
        agents.add(env.layout.agent)
        goals.add(env.layout.goal)
    assert goals == {(r, c) for r in range(half) for c in range(half)}
    assert any(r >= half or c >= half for r, c in agents)
    covered = {Layout(size, (0, 0), g, ()).rotated(k).goal for g in goals for k in range(4)}
    assert len(covered) == size * size


def quadrant(cell: tuple[int, int], size: int) -> str | None:
    half, (r, c) = size // 2, cell
    vertical = "top" if r < half else "bottom" if r >= size - half else None
    horizontal = "left" if c < half else "right" if c >= size - half else None
    return f"{vertical}-{horizontal}" if vertical and horizontal else None


def test_goals_cover_all_quadrants_equally():
    env = GridworldEnv(size=5)
    counts = Counter()
    for seed in range(600):
        env.reset(seed=seed)
        counts[quadrant(env.layout.goal, 5)] += 1
    quads = [counts[q] for q in ("top-left", "top-right", "bottom-left", "bottom-right")]
    mean = sum(quads) / 4
    assert mean > 70                                # 16 of 25 cells are in a quadrant
    # ~96 ± 9 each: ±25 % is loose for chance but catches a quadrant at half the rate.
    assert all(0.75 * mean <= n <= 1.25 * mean for n in quads), counts
    assert counts[None] > 0                         # the middle row and column occur too


# --------------------------------------------------------------------------- dynamics commute


def grid_layouts() -> list[Layout]:
    """Random layouts with many obstacles (blocked moves are common) plus hand-made edge cases."""
    env = GridworldEnv(size=5, n_obstacles=6)
    layouts = []
    for seed in range(25):
        env.reset(seed=seed)
        layouts.append(env.layout)
    layouts += [Layout(5, (0, 0), (0, 1), ((1, 0),)),
                Layout(5, (4, 4), (3, 4), ((4, 3), (0, 0))),
                Layout(5, (2, 2), (2, 3), ((1, 2), (3, 2), (2, 1)))]
    return layouts


def grid_commutes(env: GridworldEnv, layout: Layout, a: int, g: int,
                  action_map: Callable[[int, int], int], rotate: int | None = None) -> bool:
    """Whether ``step(g·s, action_map(a, g))`` is the rotation by ``g`` of ``step(s, a)``;
    ``rotate`` overrides the element used on the observation side."""
    rep_in = make_env_action(GRID).rep_in
    g_obs = g if rotate is None else rotate
    obs0, _ = env.reset(options={"layout": layout})
    obs, reward, terminated, _, _ = env.step(a)
    obs0_g, _ = env.reset(options={"layout": transform_state(GRID, layout, g)})
    obs_g, reward_g, terminated_g, _, _ = env.step(action_map(a, g))
    return (np.array_equal(obs0_g, act(rep_in, obs0, g_obs))
            and np.array_equal(obs_g, act(rep_in, obs, g_obs))
            and reward == reward_g and terminated == terminated_g)


def right_action(a: int, g: int) -> int:
    return transform_action(GRID, a, g)


@pytest.mark.parametrize("g", [1, 2, 3])
def test_grid_dynamics_commute_with_rotations(g):
    env = GridworldEnv(size=5, n_obstacles=6)
    outcomes = Counter()
    for layout in grid_layouts():
        for a in range(4):
            assert grid_commutes(env, layout, a, g, right_action), (layout, a, g)
            env.reset(options={"layout": layout})
            _, _, terminated, _, _ = env.step(a)
            outcomes["goal" if terminated else
                     "blocked" if env.layout.agent == layout.agent else "moved"] += 1
    assert min(outcomes["goal"], outcomes["blocked"], outcomes["moved"]) > 0, outcomes


def test_grid_rotation_direction():
    """One quarter turn is counter-clockwise and "up" becomes "left"."""
    layout = Layout(5, (0, 4), (4, 4), ((0, 0),))
    assert transform_state(GRID, layout, 1) == Layout(5, (0, 0), (0, 4), ((4, 0),))
    assert [transform_action(GRID, a, 1) for a in range(4)] == [3, 0, 1, 2]


@pytest.mark.parametrize("g", [1, 3])
def test_inverse_rotation_of_actions_is_detected(g):
    env = GridworldEnv(size=5, n_obstacles=6)
    layouts = grid_layouts()

    def wrong_action(a: int, h: int) -> int:
        return transform_action(GRID, a, (-h) % 4)

    def count_failures(action_map, rotate=None) -> int:
        return sum(not grid_commutes(env, layout, a, g, action_map, rotate)
                   for layout in layouts for a in range(4))

    assert count_failures(right_action) == 0
    assert count_failures(wrong_action) > 0
    assert count_failures(right_action, rotate=(-g) % 4) > 0     # wrong observation rotation


def control_step(env: gym.Env, state: np.ndarray, action: int) -> tuple[np.ndarray, float, bool]:
    env.state = np.array(state, dtype=np.float64)
    if hasattr(env, "steps_beyond_terminated"):
        env.steps_beyond_terminated = None
    _, reward, terminated, _, _ = env.step(action)
    return np.array(env.state, dtype=np.float64), reward, terminated


def control_observation(env: gym.Env, state: np.ndarray) -> np.ndarray:
    if hasattr(env, "_get_ob"):
        env.state = np.array(state, dtype=np.float64)
        return env._get_ob()
    return np.asarray(state, dtype=np.float32)


CONTROL_CASES = {
    # symmetry: (state sampling box, angle coordinates compared modulo 2π)
    "cartpole_reflect": ((-2.6, -2.0, -0.25, -2.0), (2.6, 2.0, 0.25, 2.0), ()),
    "acrobot_reflect": ((-math.pi, -math.pi, -4 * math.pi, -9 * math.pi),
                        (math.pi, math.pi, 4 * math.pi, 9 * math.pi), (0, 1)),
}


def state_distance(a: np.ndarray, b: np.ndarray, angles: tuple[int, ...]) -> float:
    diff = a - b
    for i in angles:
        diff[i] = (diff[i] + math.pi) % (2 * math.pi) - math.pi
    return float(np.max(np.abs(diff)))


@pytest.mark.parametrize("name", sorted(CONTROL_CASES))
def test_control_dynamics_commute_with_reflection(name):
    low, high, angles = CONTROL_CASES[name]
    sym = ENV_SYMMETRIES[name]
    env = gym.make(sym.env_id).unwrapped
    env.reset(seed=0)
    rep_in = make_env_action(name).rep_in
    rng = np.random.default_rng(1)
    terminations, unswapped_failures = Counter(), 0
    for state in rng.uniform(low, high, size=(60, 4)):
        for a, g in itertools.product(range(env.action_space.n), range(sym.order)):
            nxt, reward, terminated = control_step(env, state, a)
            state_g = transform_state(name, state, g)
            nxt_g, reward_g, terminated_g = control_step(
                env, state_g, transform_action(name, a, g))
            assert state_distance(nxt_g, transform_state(name, nxt, g), angles) < 1e-9
            assert (reward_g, terminated_g) == (reward, terminated)
            terminations[terminated] += 1
            assert np.allclose(control_observation(env, state_g),
                               act(rep_in, control_observation(env, state), g), atol=1e-6)
            if g == 1 and transform_action(name, a, 1) != a:   # the mirror without the swap
                nxt_wrong, _, _ = control_step(env, state_g, a)
                unswapped_failures += state_distance(
                    nxt_wrong, transform_state(name, nxt, g), angles) > 1e-6
    assert terminations[True] > 0 and terminations[False] > 0, terminations
    assert unswapped_failures > 0


# --------------------------------------------------------------------------- group actions


def sample_observations(name: str, batch: int = 3) -> torch.Tensor:
    shape = gym.make(ENV_SYMMETRIES[name].env_id).observation_space.shape
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


def sample_state(name: str):
    if name == GRID:
        return Layout(5, (0, 1), (3, 4), ((2, 2), (4, 0)))
    return np.random.default_rng(2).normal(size=4)


@pytest.mark.parametrize("name", SYMMETRIES)
def test_env_symmetries_fit_their_environment(name):
    sym, action = ENV_SYMMETRIES[name], make_env_action(name)
    env = gym.make(sym.env_id)
    assert env.action_space.n == len(sym.action_perm)
    obs, _ = env.reset(seed=0)
    assert act(action.rep_in, obs, 1).shape == obs.shape
    assert action.order == sym.order


@pytest.mark.parametrize("name", SYMMETRIES)
def test_group_laws_and_homomorphisms(name):
    action = make_env_action(name)
    n = action.order
    for g in range(n):
        assert action.compose(0, g) == g == action.compose(g, 0)
        assert action.compose(g, action.inverse(g)) == 0 == action.compose(action.inverse(g), g)
    for g, h, k in itertools.product(range(n), repeat=3):
        assert action.compose(action.compose(g, h), k) == action.compose(g, action.compose(h, k))
    x = sample_observations(name)
    q = torch.randn(3, len(ENV_SYMMETRIES[name].action_perm), dtype=torch.float64)
    state = sample_state(name)
    for g, h in itertools.product(range(n), repeat=2):
        gh = action.compose(g, h)
        assert torch.equal(action.act_in(action.act_in(x, h), g), action.act_in(x, gh))
        assert torch.equal(action.act_out(action.act_out(q, h), g), action.act_out(q, gh))
        twice = transform_state(name, transform_state(name, state, h), g)
        once = transform_state(name, state, gh)
        assert twice == once if name == GRID else np.array_equal(twice, once)
        for a in range(q.shape[1]):
            assert (transform_action(name, transform_action(name, a, h), g)
                    == transform_action(name, a, gh))
    assert not torch.equal(action.act_in(x, 1), x)            # the generator really acts
    assert not torch.equal(action.act_out(q, 1), q)


def rep_out_agrees(rep, name: str) -> bool:
    """Whether ``(g·Q)[g·a] == Q[a]`` for every ``g`` and ``a`` (what equivariance needs)."""
    sym = ENV_SYMMETRIES[name]
    q = torch.randn(5, len(sym.action_perm), dtype=torch.float64)
    for g in range(sym.order):
        moved = rep.apply(q, torch.full((5,), g))
        for a in range(q.shape[1]):
            if not torch.equal(moved[:, transform_action(name, a, g)], q[:, a]):
                return False
    return True


@pytest.mark.parametrize("name", SYMMETRIES)
def test_rep_out_matches_transform_action(name):
    assert rep_out_agrees(make_env_action(name).rep_out, name)


def test_inverse_action_permutation_is_detected():
    sigma = ENV_SYMMETRIES[GRID].action_perm
    inverse = [sigma.index(a) for a in range(4)]
    assert not rep_out_agrees(LastDimPermutation(power_table(inverse, 4)), GRID)


def test_sign_flip_accepts_any_batch():
    rep = make_env_action("acrobot_reflect").rep_in
    x = torch.arange(2 * 6, dtype=torch.float32).view(2, 6) + 1
    y = rep.apply(x, torch.tensor([1, 0]))
    assert torch.equal(y[1], x[1])
    assert torch.equal(y[0], x[0] * torch.tensor([1, -1, 1, -1, -1, -1]))
    assert rep.apply(torch.ones(7, 4, 6), torch.ones(7, dtype=torch.long)).shape == (7, 4, 6)


# --------------------------------------------------------------------------- start regions


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_start_region(name):
    preset = PRESETS[name]
    env = make_start_env(name)
    starts = []
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        state = np.array(env.unwrapped.state)
        assert preset.region.contains(state)
        assert np.array_equal(obs, control_observation(env.unwrapped, state))
        starts.append(state)
    assert len({s.tobytes() for s in starts}) == 20
    first, _ = env.reset(seed=7)
    second, _ = env.reset(seed=7)
    assert np.array_equal(first, second)
    obs, *_ = env.step(env.action_space.sample())    # the episode runs from the new state
    assert obs.shape == env.observation_space.shape


@pytest.mark.parametrize("name", ["cartpole_drifting_right", "acrobot_raised_right"])
def test_symmetric_start_distribution(name):
    region, mirror = symmetric_regions(name)
    symmetry = next(s for s, sym in ENV_SYMMETRIES.items()
                    if sym.env_id == PRESETS[name].env_id)
    assert np.allclose(transform_state(symmetry, region.low, 1), mirror.high)
    assert np.allclose(transform_state(symmetry, region.high, 1), mirror.low)
    assert PRESETS[name.replace("right", "left")].region == mirror
    env = make_start_env(name, symmetric=True)
    sides = Counter()
    for seed in range(60):
        _, info = env.reset(seed=seed)
        state = env.unwrapped.state
        side = info["start_region"]
        assert (region, mirror)[side].contains(state) and not (region, mirror)[1 - side].contains(
            state)
        sides[side] += 1
        assert side == seed % 2                       # seeded resets alternate the sides
    assert sides[0] == sides[1] == 30
    for _ in range(60):                               # unseeded (autoreset) ones draw them
        _, info = env.reset()
        sides[info["start_region"]] += 1
    assert sides[0] > 45 and sides[1] > 45, sides
