"""A user's own environment, in a module of its own: the walk-through of docs/byo_env.md.

Importing this module registers ``Corridor-v0``; ``rlkit train --env examples.corridor:Corridor-v0`` (or
``--env Corridor-v0 --env-package examples.corridor``) imports it, and the class alone works too:
``--env examples.corridor:Corridor``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Walk to the right end of a 1-D corridor.

    ## Observation
    Box(2,) float32: the position scaled to [0, 1], and a constant 1.0.

    ## Action
    Discrete(2): 0 steps left, 1 steps right (the left wall stops a step left at cell 0).

    ## Reward
    -0.01 per step, +1.0 on reaching the last cell. The optimal return from cell 0 is
    1 - 0.01 * (length - 2), 0.94 for the default length of 8.

    ## Episode end
    Terminates at the last cell; truncated after ``max_steps`` steps (default 50).

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, length: int = 8, max_steps: int = 50, render_mode: str | None = None):
        if length < 2:
            raise ValueError(f"length must be >= 2, got {length}")
        self.length, self.max_steps, self.render_mode = int(length), int(max_steps), render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.position, self.steps = 0, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.position / (self.length - 1), 1.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position, self.steps = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.position = min(self.length - 1, max(0, self.position + (1 if int(action) == 1 else -1)))
        self.steps += 1
        terminated = self.position == self.length - 1
        reward = 1.0 if terminated else -0.01
        return self._obs(), reward, terminated, self.steps >= self.max_steps and not terminated, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        cell = 16
        frame = np.full((cell, cell * self.length, 3), 255, dtype=np.uint8)
        frame[:, (self.length - 1) * cell:] = (60, 180, 75)  # the goal
        frame[2:-2, self.position * cell + 2:(self.position + 1) * cell - 2] = (0, 90, 200)  # the walker
        return frame


if "Corridor-v0" not in gym.registry:  # importing twice (a test, a worker) registers once
    gym.register(id="Corridor-v0", entry_point="examples.corridor:Corridor")
