"""GridWorld: a slippery maze with a goal, pits and a step cost; exact finite-horizon optimum."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs._vector import NativeVectorEnv, check_bool, check_choice, check_float, check_render_mode

#: Layouts selectable by name. ``#`` wall, ``.`` floor, ``S`` start, ``G`` goal, ``P`` pit.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "8x8": (
        "S..#....",
        ".#.#.##.",
        ".#...P#.",
        ".###.#..",
        "...P.#.#",
        "##.#....",
        ".P.#P##.",
        ".....#.G",
    ),
    "16x16": (
        "S#.......#......",
        ".#.#.###.#.#....",
        ".#.#.#.#.#P#.#..",
        ".#.#.#P#.###.#..",
        ".#.#.#.#.....#..",
        ".###.#.#.#####..",
        ".....#P...P.P#..",
        "##########.#.#..",
        "....P......#.#..",
        "#..#.#.#####.#..",
        "P..#.#...#...#..",
        ".#.###.#.#.###..",
        ".......#...#....",
        ".#P#.###.P##..#.",
        ".......#........",
        "...............G",
    ),
}

DEFAULT_MAX_EPISODE_STEPS = 100
MAX_CELLS = 1024  # one-hot observations and tables grow with the square of the cell count

# Actions: 0 up, 1 right, 2 down, 3 left (clockwise, so (a + 1) % 4 is "to the right of a").
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
# Slip bucket -> turn added to the intended action: 0 slips left, 1 slips right, 2 goes straight.
_TURN = (3, 1, 0)
_CHARS = set("#.SGP")


def _parse_layout(layout) -> tuple[str, ...]:
    if isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)} or a sequence of equal-length "
                             f"strings over '#.SGP', got {layout!r}")
        return LAYOUTS[layout]
    try:
        rows = tuple(str(r) for r in layout)
    except TypeError:
        raise ValueError(f"layout must be a layout name {list(LAYOUTS)} or a sequence of strings, "
                         f"got {layout!r}") from None
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"layout rows must be non-empty strings of equal length, got {list(rows)}")
    if len(rows) * len(rows[0]) > MAX_CELLS:
        raise ValueError(f"layout has {len(rows)} x {len(rows[0])} cells: at most {MAX_CELLS} are accepted")
    bad = set("".join(rows)) - _CHARS
    if bad:
        raise ValueError(f"layout may only contain the characters '#.SGP' "
                         f"(wall, floor, start, goal, pit), got {sorted(bad)}")
    return rows


def _validate_reachable(rows: tuple[str, ...]) -> None:
    flat = "".join(rows)
    if flat.count("S") != 1:
        raise ValueError(f"layout must contain exactly one start 'S', got {flat.count('S')}")
    if "G" not in flat:
        raise ValueError("layout must contain at least one goal 'G', got none")
    h, w = len(rows), len(rows[0])
    start = divmod(flat.index("S"), w)
    seen, queue = {start}, deque([start])
    while queue:
        r, c = queue.popleft()
        if rows[r][c] == "G":
            return
        for dr, dc in _MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < h and 0 <= nc < w and (nr, nc) not in seen and rows[nr][nc] not in "#P":
                seen.add((nr, nc))
                queue.append((nr, nc))
    raise ValueError("layout is impossible: no goal 'G' is reachable from the start 'S' "
                     "without crossing a wall '#' or a pit 'P'")


@functools.lru_cache(maxsize=32)
def _tables(rows: tuple[str, ...], goal_reward: float, pit_reward: float, step_cost: float):
    """next3[c, a, b]: cell after action a in cell c with slip bucket b; reward and terminal tables."""
    h, w = len(rows), len(rows[0])
    flat = "".join(rows)
    n = h * w
    nxt = np.zeros((n, 4), dtype=np.int64)
    for c in range(n):
        r, col = divmod(c, w)
        for d, (dr, dc) in enumerate(_MOVES):
            nr, nc = r + dr, col + dc
            ok = 0 <= nr < h and 0 <= nc < w and rows[nr][nc] != "#"
            nxt[c, d] = nr * w + nc if ok else c
    next3 = np.zeros((n, 4, 3), dtype=np.int64)
    for a in range(4):
        for b, turn in enumerate(_TURN):
            next3[:, a, b] = nxt[:, (a + turn) % 4]
    reward = np.full(n, -step_cost, dtype=np.float64)
    terminal = np.zeros(n, dtype=np.bool_)
    for c, ch in enumerate(flat):
        if ch == "G":
            reward[c], terminal[c] = goal_reward, True
        elif ch == "P":
            reward[c], terminal[c] = pit_reward, True
    for arr in (next3, reward, terminal):
        arr.setflags(write=False)
    return next3, reward, terminal, flat.index("S")


@functools.lru_cache(maxsize=32)
def solve_finite_horizon(rows: tuple[str, ...], slip_prob: float, step_cost: float,
                         goal_reward: float, pit_reward: float, horizon: int):
    """Exact finite-horizon, undiscounted (gamma = 1) value iteration on the transition model.

    Returns ``(values, policy)``: ``values[k, c]`` is the optimal expected return from cell ``c``
    with ``k`` steps left (so ``values[horizon, start]`` is the optimum of an episode under a
    ``horizon``-step TimeLimit) and ``policy[t, c]`` the optimal action at elapsed step ``t``.
    """
    next3, reward, terminal, _ = _tables(rows, goal_reward, pit_reward, step_cost)
    half = slip_prob / 2
    probs = np.array([half, slip_prob - half, 1.0 - slip_prob])
    n = next3.shape[0]
    values = np.zeros((horizon + 1, n))
    policy = np.zeros((horizon, n), dtype=np.int64)
    cont = ~terminal
    r_next = reward[next3]  # (n, 4, 3)
    for k in range(1, horizon + 1):
        v = values[k - 1]
        q = ((r_next + np.where(cont[next3], v[next3], 0.0)) * probs).sum(axis=2)
        policy[horizon - k] = q.argmax(axis=1)
        values[k] = q.max(axis=1)
    values.setflags(write=False)
    policy.setflags(write=False)
    return values, policy


class _GridWorldParams:
    """Validated kwargs shared by the single and the vector env."""

    def _setup(self, layout, slip_prob, step_cost, goal_reward, pit_reward, obs_mode, include_layout,
               render_mode):
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.rows = _parse_layout(layout)
        _validate_reachable(self.rows)
        self.slip_prob = check_float("slip_prob", slip_prob, 0.0, 1.0)
        self.step_cost = check_float("step_cost", step_cost, 0.0)
        self.goal_reward = check_float("goal_reward", goal_reward)
        self.pit_reward = check_float("pit_reward", pit_reward)
        self.obs_mode = check_choice("obs_mode", obs_mode, ("onehot", "coords"))
        self.include_layout = check_bool("include_layout", include_layout)
        self.height, self.width = len(self.rows), len(self.rows[0])
        self._half_p = self.slip_prob / 2
        self._next3, self._reward, self._terminal, self.start = _tables(
            self.rows, self.goal_reward, self.pit_reward, self.step_cost)
        self._obs_table = self._build_obs_table()
        self._obs_space = spaces.Box(0.0, 1.0, shape=(self._obs_table.shape[1],), dtype=np.float32)

    def _build_obs_table(self) -> np.ndarray:
        h, w = self.height, self.width
        n = h * w
        if self.obs_mode == "onehot":
            pos = np.eye(n, dtype=np.float32)
        else:
            r, c = np.divmod(np.arange(n), w)
            pos = np.stack([r / max(h - 1, 1), c / max(w - 1, 1)], axis=1).astype(np.float32)
        if self.include_layout:
            flat = np.array(list("".join(self.rows)))
            planes = np.concatenate([(flat == ch).astype(np.float32) for ch in "#PG"])
            pos = np.concatenate([pos, np.broadcast_to(planes, (n, planes.size))], axis=1)
        table = np.ascontiguousarray(pos, dtype=np.float32)
        table.setflags(write=False)
        return table

    def _key(self):
        return (self.rows, self.slip_prob, self.step_cost, self.goal_reward, self.pit_reward)


class GridWorldEnv(_GridWorldParams, gym.Env):
    """A slippery maze: walk from the start to the goal, avoid the pits.

    ## Description
    The agent moves on a grid of walls ``#``, floor ``.``, a start ``S``, goals ``G`` and pits
    ``P`` (two built-in layouts: ``"8x8"``, the default, and ``"16x16"``; or pass your own list of
    strings). With probability ``slip_prob`` the move goes sideways: half of that probability to
    the left of the intended direction, half to the right. Moving into a wall or off the grid
    leaves the agent where it is.

    ## Action Space
    ``Discrete(4)``: 0 up, 1 right, 2 down, 3 left.

    ## Observation Space
    ``Box(0, 1, (D,), float32)``. ``obs_mode="onehot"`` (default): a one-hot of the agent's cell
    (``D = H*W``, row-major); ``obs_mode="coords"``: ``(row / (H-1), col / (W-1))`` (``D = 2``).
    With ``include_layout=True`` the wall, pit and goal planes (``3*H*W`` zeros and ones) are
    appended, so one policy can be trained on several layouts.

    ## Rewards
    ``goal_reward`` (+1) for entering a goal, ``pit_reward`` (-1) for entering a pit, otherwise
    ``-step_cost`` (-0.01) per step (bumping into a wall included).

    ## Starting State
    Always the ``S`` cell.

    ## Episode End
    Termination: entering a goal or a pit. Truncation: the registration's TimeLimit,
    ``max_episode_steps=100``.

    ## Reference
    ``reference()``: the optimal expected undiscounted return (gamma = 1) from the start within
    the TimeLimit, computed by exact finite-horizon value iteration on the transition model
    (``horizon`` = the registered ``max_episode_steps``, 100, unless passed explicitly). The
    optimum is attained by a time-dependent policy in general; for both built-in layouts the
    stationary policy ``optimal_policy()[0]`` attains it from the start too. Default layout
    ``"8x8"``: 0.6847; ``"16x16"``: 0.4722 (:func:`solve_finite_horizon`; ``optimal_policy()``
    gives the time-indexed optimal actions).

    ## Randomness
    One ``self.np_random.random()`` double per step (the slip), none at reset.

    ## Arguments
    ``layout="8x8"``, ``slip_prob=0.1``, ``step_cost=0.01``, ``goal_reward=1.0``,
    ``pit_reward=-1.0``, ``obs_mode="onehot"``, ``include_layout=False``, ``render_mode=None``.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 8, "task": "episodic",
    }

    def __init__(self, layout: str | Sequence[str] = "8x8", slip_prob: float = 0.1,
                 step_cost: float = 0.01, goal_reward: float = 1.0, pit_reward: float = -1.0,
                 obs_mode: str = "onehot", include_layout: bool = False,
                 render_mode: str | None = None):
        self._setup(layout, slip_prob, step_cost, goal_reward, pit_reward, obs_mode, include_layout,
                    render_mode)
        self.render_mode = render_mode
        self.observation_space = self._obs_space
        self.action_space = spaces.Discrete(4)
        self.cell: int | None = None
        self._canvas = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cell = self.start
        if self.render_mode == "human":
            self.render()
        return self._obs_table[self.cell].copy(), {}

    def step(self, action):
        if self.cell is None:
            raise RuntimeError("Cannot call step() before reset()")
        a = int(action)
        if not 0 <= a < 4:
            raise ValueError(f"action must be in {{0, 1, 2, 3}}, got {action!r}")
        u = self.np_random.random()
        bucket = (u >= self._half_p) + (u >= self.slip_prob)
        self.cell = int(self._next3[self.cell, a, bucket])
        reward = float(self._reward[self.cell])
        terminated = bool(self._terminal[self.cell])
        if self.render_mode == "human":
            self.render()
        return self._obs_table[self.cell].copy(), reward, terminated, False, {}

    # -------------------------------------------------------------- reference
    def _horizon(self, horizon: int | None) -> int:
        if horizon is not None:
            return int(horizon)
        spec = gym.registry.get(self.spec.id) if self.spec is not None else None
        if spec is not None and spec.max_episode_steps is not None:
            return spec.max_episode_steps
        return DEFAULT_MAX_EPISODE_STEPS

    def optimal_policy(self, horizon: int | None = None) -> np.ndarray:
        """``policy[t, cell]``: the optimal action at elapsed step t (finite-horizon VI)."""
        return solve_finite_horizon(*self._vi_args(self._horizon(horizon)))[1]

    def _vi_args(self, horizon: int):
        return (self.rows, self.slip_prob, self.step_cost, self.goal_reward, self.pit_reward, horizon)

    def reference(self, horizon: int | None = None) -> dict:
        """The value-iteration optimum of the expected episode return (see the class docstring)."""
        values, _ = solve_finite_horizon(*self._vi_args(self._horizon(horizon)))
        return {"name": "value iteration optimum", "score": float(values[-1, self.start]),
                "metric": "episode_return"}

    # -------------------------------------------------------------- rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' "
                            "or 'human' to gym.make")
            return None
        if self._canvas is None:
            from envs._render import Canvas

            self._px = max(16, 400 // max(self.height, self.width))
            self._canvas = Canvas(self.render_mode, self.width * self._px, self.height * self._px,
                                  self.metadata["render_fps"], "rlkit GridWorld")
        return self._canvas.frame(self._draw)

    def _draw(self, surf, pygame) -> None:
        px = self._px
        surf.fill((236, 236, 236))
        for r, row in enumerate(self.rows):
            for c, ch in enumerate(row):
                rect = pygame.Rect(c * px, r * px, px, px)
                if ch == "#":
                    pygame.draw.rect(surf, (55, 60, 72), rect)
                elif ch == "G":
                    pygame.draw.rect(surf, (60, 180, 75), rect)
                    pygame.draw.rect(surf, (255, 255, 255), rect.inflate(-px // 2, -px // 2), 2)
                elif ch == "P":
                    pygame.draw.rect(surf, (236, 236, 236), rect)
                    pygame.draw.circle(surf, (200, 40, 40), rect.center, px * 0.42)
                    pygame.draw.circle(surf, (25, 25, 25), rect.center, px * 0.32)
                elif ch == "S":
                    pygame.draw.rect(surf, (190, 215, 245), rect)
                pygame.draw.rect(surf, (200, 200, 200), rect, 1)
        if self.cell is not None:
            r, c = divmod(self.cell, self.width)
            pygame.draw.circle(surf, (30, 90, 220), (c * px + px // 2, r * px + px // 2), px * 0.33)

    def close(self):
        if self._canvas is not None:
            self._canvas.close()
            self._canvas = None


class GridWorldVectorEnv(_GridWorldParams, NativeVectorEnv):
    """Native numpy vector version of :class:`GridWorldEnv`, step-for-step identical to
    ``SyncVectorEnv`` of ``gym.make("rlkit/GridWorld-v0")`` for the same seeds (copy i is seeded
    with seed + i and draws from its own generator in the single env's order)."""

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 8, "task": "episodic",
    }

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
                 layout: str | Sequence[str] = "8x8", slip_prob: float = 0.1, step_cost: float = 0.01,
                 goal_reward: float = 1.0, pit_reward: float = -1.0, obs_mode: str = "onehot",
                 include_layout: bool = False, render_mode: str | None = None,
                 autoreset_mode="NextStep"):
        self._setup(layout, slip_prob, step_cost, goal_reward, pit_reward, obs_mode, include_layout,
                    render_mode)
        self._init_vector(num_envs, max_episode_steps, autoreset_mode, render_mode)
        self._kwargs = {"layout": self.rows, "slip_prob": self.slip_prob, "step_cost": self.step_cost,
                            "goal_reward": self.goal_reward, "pit_reward": self.pit_reward,
                            "obs_mode": self.obs_mode, "include_layout": self.include_layout}
        self.single_observation_space = self._obs_space
        self.single_action_space = spaces.Discrete(4)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.cells = np.full(self.num_envs, self.start, dtype=np.int64)
        self._next_flat = self._next3.reshape(-1)
        self._thresholds = np.array([self._half_p, self.slip_prob])

    def _check_actions(self, actions):
        return self._check_discrete(actions, 4)

    def _reset_copies(self, idx):
        self.cells[idx] = self.start

    def _step_copies(self, actions, active):
        u = self._streams.peek1()
        self._streams.advance(active)
        bucket = self._thresholds.searchsorted(u, side="right")  # = (u >= p/2) + (u >= p)
        cells = self._next_flat[(self.cells * 4 + actions) * 3 + bucket]
        self.cells = cells
        return self._reward[cells], self._terminal[cells]

    def _observe(self):
        return self._obs_table[self.cells]

    def _make_renderer(self):
        return GridWorldEnv(render_mode=self.render_mode, **self._kwargs)

    def _load_renderer(self, i):
        self._renderer_env.cell = int(self.cells[i])
