"""Rollout collection over a NEXT_STEP vector env into tensors on the learner's device.

Written once, called by every on-policy agent (REINFORCE, Actor-Critic, PPO, A3C workers,
Ray rollout workers): ``Rollout.collect(policy)`` steps the env ``n_steps`` times and returns a
``Batch`` whose ``valid`` mask marks the autoreset steps to leave out of losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces

from rlkit.environments import finished_episodes


@dataclass
class Batch:
    obs: torch.Tensor          # (T, N, *obs_shape), kept in the env's dtype (uint8 pixels stay uint8)
    actions: torch.Tensor      # (T, N, *act_shape)
    logprobs: torch.Tensor     # (T, N)
    values: torch.Tensor       # (T, N)
    rewards: torch.Tensor      # (T, N) as the env gave them (normalised by NormalizeReturn, rlkit/normalization.py)
    env_rewards: torch.Tensor  # (T, N) in the env's own units (= rewards unless norm_reward)
    terminated: torch.Tensor   # (T, N) bool
    truncated: torch.Tensor    # (T, N) bool
    valid: torch.Tensor        # (T, N) bool, False on autoreset steps
    next_obs: torch.Tensor     # (N, *obs_shape): the observation after the last step
    # Episodes that ended during this rollout (RecordEpisodeStatistics, in the env's own reward units)
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    episode_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def reward_rate(self) -> float:
        """Mean reward per valid step in the env's own units: the score of a continuing task."""
        return float(self.env_rewards[self.valid].sum()) / max(1, int(self.valid.sum()))


# policy(obs_tensor) -> (actions, logprobs, values), all tensors on the learner's device
PolicyStep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def env_action(actions: torch.Tensor, action_space: spaces.Space) -> np.ndarray:
    """Tensor actions -> what the env accepts (Gaussian samples are clipped to the Box, as SB3 does;
    categorical indices are shifted by the space's ``start``; Bernoulli samples become its 0/1 dtype)."""
    a = actions.cpu().numpy()
    if isinstance(action_space, spaces.Box):
        return np.clip(a, action_space.low, action_space.high).astype(action_space.dtype)
    if isinstance(action_space, spaces.MultiBinary):
        return a.astype(action_space.dtype)
    if isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete)) and np.any(action_space.start != 0):
        return a + action_space.start
    return a


class Rollout:
    """Owns the vector env's current observation and which envs are due an autoreset step."""

    def __init__(self, venv, n_steps: int, device: torch.device, seed: int | None = None):
        self.venv, self.n_steps, self.device = venv, n_steps, torch.device(device)
        self.n_envs = venv.num_envs
        obs, _ = venv.reset(seed=seed)
        self.obs = torch.as_tensor(obs, device=self.device)
        self.resetting = torch.zeros(self.n_envs, dtype=torch.bool, device=self.device)
        obs_space, act_space = venv.single_observation_space, venv.single_action_space
        T, N = n_steps, self.n_envs
        self.buf = Batch(
            obs=torch.zeros((T, N, *obs_space.shape), dtype=self.obs.dtype, device=self.device),
            actions=torch.zeros((T, N, *act_space.shape),
                                dtype=torch.long if isinstance(act_space, (spaces.Discrete, spaces.MultiDiscrete))
                                else torch.float32, device=self.device),
            logprobs=torch.zeros((T, N), device=self.device), values=torch.zeros((T, N), device=self.device),
            rewards=torch.zeros((T, N), device=self.device), env_rewards=torch.zeros((T, N), device=self.device),
            terminated=torch.zeros((T, N), dtype=torch.bool, device=self.device),
            truncated=torch.zeros((T, N), dtype=torch.bool, device=self.device),
            valid=torch.zeros((T, N), dtype=torch.bool, device=self.device), next_obs=self.obs)

    @torch.no_grad()
    def collect(self, policy: PolicyStep) -> Batch:
        b, space = self.buf, self.venv.single_action_space
        ep_returns, ep_lengths = [], []
        for t in range(self.n_steps):
            actions, logprobs, values = policy(self.obs)
            obs, rewards, terminated, truncated, infos = self.venv.step(env_action(actions, space))
            b.obs[t] = self.obs
            b.actions[t] = actions
            b.logprobs[t] = logprobs
            b.values[t] = values
            b.rewards[t] = torch.as_tensor(rewards, dtype=torch.float32, device=self.device)
            b.env_rewards[t] = (torch.as_tensor(infos["env_reward"], dtype=torch.float32, device=self.device)
                                if "env_reward" in infos else b.rewards[t])
            b.terminated[t] = torch.as_tensor(terminated, device=self.device)
            b.truncated[t] = torch.as_tensor(truncated, device=self.device)
            b.valid[t] = ~self.resetting
            self.resetting = b.terminated[t] | b.truncated[t]
            self.obs = torch.as_tensor(obs, device=self.device)
            if "episode" in infos:
                returns, lengths = finished_episodes(infos)
                ep_returns.append(returns)
                ep_lengths.append(lengths)
        b.next_obs = self.obs
        if ep_returns:
            b.episode_returns, b.episode_lengths = np.concatenate(ep_returns), np.concatenate(ep_lengths)
        else:
            b.episode_returns, b.episode_lengths = np.zeros(0), np.zeros(0, dtype=int)
        return b
