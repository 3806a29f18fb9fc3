"""A goal-conditioned environment with a Dict observation: walk to a goal drawn anew every episode.

Importing this module registers ``GoalReach-v0``; ``rlkit train --algo ppo --env
examples.goal_env:GoalReach-v0`` imports it. The goal is only in the observation, so an agent must read
it: a policy blind to the goal can do no better than search the grid (see the Reward section).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])  # up, right, down, left as (row, column) steps


class GoalReach(gym.Env):
    """Reach a goal cell of a ``size`` x ``size`` grid; the goal changes every episode.

    ## Observation
    Dict with two entries, each a Box(0, size - 1, (2,), int64) holding a (row, column):
    ``"position"`` (the agent's cell) and ``"goal"`` (the cell to reach).

    ## Action
    Discrete(4): 0 up, 1 right, 2 down, 3 left. A move into the border leaves the agent in place.

    ## Reward
    1 - 0.9 * steps / max_steps on the step that reaches the goal (MiniGrid's reward), 0 on every other
    step. Start and goal are distinct cells drawn uniformly, so the shortest path is the Manhattan
    distance, 3.33 steps on average on the default 5 x 5 grid: the best mean return is about 0.85.
    A policy that ignores ``"goal"`` finds it after k steps with probability at most k / (cells - 1)
    (it has visited at most k other cells, and the goal is any of them with equal chance), so its
    mean return is at most sum over k <= max_steps of (1 - 0.9 k / max_steps) / (cells - 1): 0.44
    on the default grid.

    ## Starting state
    Position and goal: two distinct cells drawn uniformly with ``self.np_random``.

    ## Episode end
    Terminates when the agent reaches the goal; truncated after ``max_steps`` steps (default 4 * size).

    ## Arguments
    ``size`` (>= 2, default 5), ``max_steps`` (>= 1, default 4 * size), ``render_mode`` (None or
    "rgb_array": a numpy drawing of 16 pixels per cell).

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, size: int = 5, max_steps: int | None = None, render_mode: str | None = None):
        if int(size) < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        max_steps = 4 * int(size) if max_steps is None else int(max_steps)
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of None, rgb_array; got {render_mode!r}")
        self.size, self.max_steps, self.render_mode = int(size), max_steps, render_mode
        cell = spaces.Box(0, self.size - 1, shape=(2,), dtype=np.int64)
        self.observation_space = spaces.Dict({"position": cell, "goal": cell})
        self.action_space = spaces.Discrete(4)
        self.position = np.zeros(2, dtype=np.int64)
        self.goal = np.zeros(2, dtype=np.int64)
        self.steps = 0

    def _obs(self) -> dict:
        return {"position": self.position.copy(), "goal": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        cells = self.size * self.size
        start = int(self.np_random.integers(cells))
        goal = int(self.np_random.integers(cells - 1))
        goal += goal >= start  # any cell but the start, uniformly
        self.position = np.array(divmod(start, self.size), dtype=np.int64)
        self.goal = np.array(divmod(goal, self.size), dtype=np.int64)
        self.steps = 0
        return self._obs(), {}

    def step(self, action):
        self.position = np.clip(self.position + MOVES[int(action)], 0, self.size - 1)
        self.steps += 1
        terminated = bool((self.position == self.goal).all())
        reward = 1.0 - 0.9 * self.steps / self.max_steps if terminated else 0.0
        truncated = self.steps >= self.max_steps and not terminated
        return self._obs(), reward, terminated, truncated, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        cell = 16
        frame = np.full((self.size * cell, self.size * cell, 3), 255, dtype=np.uint8)
        frame[::cell, :] = frame[:, ::cell] = 200  # grid lines
        (gr, gc), (pr, pc) = self.goal, self.position
        frame[gr * cell + 1:(gr + 1) * cell, gc * cell + 1:(gc + 1) * cell] = (60, 180, 75)  # the goal
        frame[pr * cell + 4:(pr + 1) * cell - 3, pc * cell + 4:(pc + 1) * cell - 3] = (0, 90, 200)  # the agent
        return frame


if "GoalReach-v0" not in gym.registry:  # importing twice (a test, a worker) registers once
    gym.register(id="GoalReach-v0", entry_point="examples.goal_env:GoalReach")
