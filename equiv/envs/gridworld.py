"""A small Gridworld whose dynamics commute exactly with the quarter turns of the grid.

The agent walks on an ``N×N`` grid towards a goal, around ``n_obstacles`` obstacle cells. Actions
are numbered clockwise (0 up, 1 right, 2 down, 3 left) so that rotating the grid permutes them
cyclically; layouts are drawn uniformly among the solvable ones, so a layout and its rotations
are equally likely. ``goal_region="quadrant"`` keeps the goal in the top-left quadrant: the
pretraining setting in which only some orientations of the task occur. For odd ``N`` that
quadrant includes the middle row and column (``⌈N/2⌉×⌈N/2⌉`` cells), so that its four rotations
cover the grid: every goal has an orientation seen in pretraining, which is what equizero needs.

No torch here: the environment is usable (and registered) without the 20-second torch import.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

Cell = tuple[int, int]

#: Row/column displacement of each action, clockwise from "up".
MOVES: tuple[Cell, ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))
ACTION_NAMES = ("up", "right", "down", "left")
GOAL_REGIONS = ("any", "quadrant")
STEP_REWARD = -0.01
GOAL_REWARD = 1.0
MAX_SAMPLING_ATTEMPTS = 10_000


def rotate_cell(cell: Cell, size: int, k: int = 1) -> Cell:
    """``cell`` after ``k`` quarter turns counter-clockwise of the grid (``torch.rot90``'s
    direction on ``[..., row, col]``): one turn maps ``(r, c)`` to ``(N-1-c, r)``."""
    r, c = cell
    for _ in range(k % 4):
        r, c = size - 1 - c, r
    return r, c


@dataclass(frozen=True)
class Layout:
    """Where the agent, the goal and the obstacles are; the Gridworld's whole state.

    Obstacles are kept sorted so that equal layouts compare equal whatever order built them. The
    agent may stand on the goal (the terminal layout); obstacles never share a cell.
    """

    size: int
    agent: Cell
    goal: Cell
    obstacles: tuple[Cell, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent", _cell(self.agent))
        object.__setattr__(self, "goal", _cell(self.goal))
        object.__setattr__(self, "obstacles", tuple(sorted(_cell(o) for o in self.obstacles)))
        cells = [self.agent, self.goal, *self.obstacles]
        if any(not (0 <= r < self.size and 0 <= c < self.size) for r, c in cells):
            raise ValueError(f"layout cell outside the {self.size}x{self.size} grid: {self}")
        if len(set(cells[1:])) != len(cells) - 1 or self.agent in self.obstacles:
            raise ValueError(f"goal and obstacles must occupy distinct cells, and the agent "
                             f"must not stand on an obstacle: {self}")

    @classmethod
    def from_mapping(cls, size: int, layout: Mapping[str, Any]) -> Layout:
        """From ``{"agent": (r, c), "goal": (r, c), "obstacles": [(r, c), ...]}``."""
        unknown = set(layout) - {"agent", "goal", "obstacles", "size"}
        if unknown:
            raise ValueError(f"unknown layout keys {sorted(unknown)}")
        if layout.get("size", size) != size:
            raise ValueError(f"layout for a {layout['size']}-grid given to a {size}-grid")
        return cls(size, layout["agent"], layout["goal"], tuple(layout.get("obstacles", ())))

    def rotated(self, k: int) -> Layout:
        """The layout turned ``k`` quarter turns counter-clockwise (see :func:`rotate_cell`)."""
        def rot(cell: Cell) -> Cell:
            return rotate_cell(cell, self.size, k)
        return Layout(self.size, rot(self.agent), rot(self.goal),
                      tuple(rot(o) for o in self.obstacles))

    def moved(self, action: int) -> Layout:
        """The layout after ``action``: walls and obstacles leave the agent where it is."""
        dr, dc = MOVES[action]
        r, c = self.agent[0] + dr, self.agent[1] + dc
        if not (0 <= r < self.size and 0 <= c < self.size) or (r, c) in self.obstacles:
            return self
        return Layout(self.size, (r, c), self.goal, self.obstacles)

    def is_solvable(self) -> bool:
        """Whether the goal can be reached from the agent (breadth-first search)."""
        blocked = set(self.obstacles)
        seen, queue = {self.agent}, deque([self.agent])
        while queue:
            cell = queue.popleft()
            if cell == self.goal:
                return True
            for dr, dc in MOVES:
                nxt = (cell[0] + dr, cell[1] + dc)
                if (0 <= nxt[0] < self.size and 0 <= nxt[1] < self.size
                        and nxt not in blocked and nxt not in seen):
                    seen.add(nxt)
                    queue.append(nxt)
        return False

    def observation(self) -> np.ndarray:
        """Channels (agent, goal, obstacles) as a float32 ``[3, N, N]`` one-hot image."""
        obs = np.zeros((3, self.size, self.size), dtype=np.float32)
        obs[(0, *self.agent)] = 1.0
        obs[(1, *self.goal)] = 1.0
        for r, c in self.obstacles:
            obs[2, r, c] = 1.0
        return obs


def _cell(cell: Iterable[int]) -> Cell:
    r, c = (int(v) for v in cell)
    return r, c


class GridworldEnv(gym.Env):
    """Reach the goal on an ``N×N`` grid: +1 and ``terminated`` there, −0.01 for any other step.

    ``truncated`` is set once ``max_steps`` steps (default ``4·N²``, 100 for ``N=5``: far more than
    any shortest path needs) have been taken without reaching the goal. An explicit layout is set
    with ``reset(options={"layout": {...}})`` (or a :class:`Layout`); its cells must be distinct and
    inside the grid, but it need not be solvable, so tests can build any situation.
    ``render_mode="ansi"`` returns a text picture.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, size: int = 5, n_obstacles: int = 3, goal_region: str = "any",
                 max_steps: int | None = None, render_mode: str | None = None) -> None:
        if size < 2:
            raise ValueError(f"size must be at least 2, got {size}")
        if not 0 <= n_obstacles <= size * size - 2:
            raise ValueError(f"n_obstacles must be in 0..{size * size - 2}, got {n_obstacles}")
        if goal_region not in GOAL_REGIONS:
            raise ValueError(f"goal_region must be one of {GOAL_REGIONS}, got {goal_region!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.size = size
        self.n_obstacles = n_obstacles
        self.goal_region = goal_region
        self.max_steps = 4 * size * size if max_steps is None else max_steps
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3, size, size), dtype=np.float32)
        self.action_space = spaces.Discrete(4)
        self.layout: Layout | None = None
        self.steps = 0

    def _goal_cells(self) -> list[int]:
        """Flat indices of the cells the goal may occupy."""
        n, half = self.size, (self.size + 1) // 2
        if self.goal_region == "any":
            return list(range(n * n))
        return [r * n + c for r in range(half) for c in range(half)]

    def sample_layout(self) -> Layout:
        """A layout drawn uniformly among the solvable ones (rejection sampling).

        Uniform over all layouts, then conditioned on solvability: rotations map solvable layouts
        onto solvable layouts, so the distribution is rotation-invariant (for ``"any"``).
        """
        n = self.size
        goal_cells = self._goal_cells()
        for _ in range(MAX_SAMPLING_ATTEMPTS):
            goal = int(self.np_random.choice(goal_cells))
            others = [i for i in range(n * n) if i != goal]
            picked = self.np_random.choice(others, size=self.n_obstacles + 1, replace=False)
            layout = Layout(n, divmod(int(picked[0]), n), divmod(goal, n),
                            tuple(divmod(int(i), n) for i in picked[1:]))
            if layout.is_solvable():
                return layout
        raise RuntimeError(f"no solvable layout found in {MAX_SAMPLING_ATTEMPTS} draws: "
                           f"too many obstacles ({self.n_obstacles}) for a {n}x{n} grid?")

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        given = (options or {}).get("layout")
        if given is None:
            self.layout = self.sample_layout()
        elif isinstance(given, Layout):
            if given.size != self.size:
                raise ValueError(f"layout for a {given.size}-grid given to a {self.size}-grid")
            self.layout = given
        else:
            self.layout = Layout.from_mapping(self.size, given)
        if self.layout.agent == self.layout.goal:
            raise ValueError("the agent must not start on the goal")
        self.steps = 0
        return self.layout.observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}; expected one of 0..3")
        self.layout = self.layout.moved(int(action))
        self.steps += 1
        terminated = self.layout.agent == self.layout.goal
        reward = GOAL_REWARD if terminated else STEP_REWARD
        truncated = self.steps >= self.max_steps
        return self.layout.observation(), reward, terminated, truncated, {}

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.layout is None:
            return None
        grid = [["." for _ in range(self.size)] for _ in range(self.size)]
        for r, c in self.layout.obstacles:
            grid[r][c] = "#"
        grid[self.layout.goal[0]][self.layout.goal[1]] = "G"
        grid[self.layout.agent[0]][self.layout.agent[1]] = "A"
        return "\n".join("".join(row) for row in grid) + "\n"
