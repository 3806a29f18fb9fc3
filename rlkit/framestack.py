"""Frame stacking: the last k observations concatenated along the last axis.

One frame of a moving object hides its velocity (Catch's ball drift, Atari's ball): stacking
k frames makes the state Markov again, as in the DQN paper. Concatenating on the channel axis
keeps an image an image (H, W, k*C), so the Nature CNN reads it unchanged; vector observations
become k*D long. The stack lives in the env wrappers below, so training, ``eval`` and ``render``
see exactly the same observations. An agent asks for it with ``frame_stack: k`` in its config.

Each step builds a new array and never writes into one it has returned, so callers may keep
the observations they get (the rollout stores them) without copies.

Under NEXT_STEP autoreset the step after an episode end returns the new episode's first frame:
that step refills the whole stack with it, so no frame of the old episode leaks into the new one.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space


def stacked_space(space: spaces.Space, k: int) -> spaces.Box:
    if not isinstance(space, spaces.Box):
        raise ValueError(f"frame_stack needs a Box observation space, got {type(space).__name__}")
    return spaces.Box(np.concatenate([space.low] * k, axis=-1), np.concatenate([space.high] * k, axis=-1),
                      dtype=space.dtype)


def agent_frame_stack(agent) -> int:
    """How many frames ``agent`` expects (1 for agents without the option, e.g. SB3 and World Models)."""
    return int(getattr(getattr(agent, "config", None), "frame_stack", 1) or 1)


class FrameStack(gym.Wrapper):
    """Single-env frame stack (used by ``render``)."""

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        self.k = k
        self.observation_space = stacked_space(env.observation_space, k)
        self._frames: np.ndarray | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames = np.concatenate([obs] * self.k, axis=-1)
        return self._frames, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        c = np.shape(obs)[-1]
        self._frames = np.concatenate([self._frames[..., c:], obs], axis=-1)
        return self._frames, reward, terminated, truncated, info


class VectorFrameStack(gym.vector.VectorWrapper):
    """Vector-env frame stack for NEXT_STEP autoreset (training and ``eval``)."""

    def __init__(self, env: gym.vector.VectorEnv, k: int):
        super().__init__(env)
        self.k = k
        self.single_observation_space = stacked_space(env.single_observation_space, k)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self._frames: np.ndarray | None = None
        self._episode_over = np.zeros(env.num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames = np.concatenate([obs] * self.k, axis=-1)
        self._episode_over[:] = False
        return self._frames, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        c = obs.shape[-1]
        frames = np.concatenate([self._frames[..., c:], obs], axis=-1)
        restarted = self._episode_over  # these rows now hold a new episode's first frame
        if restarted.any():
            frames[restarted] = np.concatenate([obs[restarted]] * self.k, axis=-1)
        self._frames = frames
        self._episode_over = np.logical_or(terminated, truncated)
        return frames, reward, terminated, truncated, info
