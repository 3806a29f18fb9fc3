"""Observation and return running statistics, owned by the learner.

Gymnasium's vector wrappers ``NormalizeObservation`` and ``NormalizeReward`` do the arithmetic;
``Normalizers`` only decides who owns their statistics. The learner holds one ``Normalizers``;
every env it wraps points its wrapper at these same ``RunningMeanStd`` objects, so a local
collector updates the learner's statistics directly, and a remote worker (docs/architecture.md,
workers) receives them with the weights as plain data (``state()`` / ``load_state()``).
``predict`` uses the frozen statistics (``normalize_obs``), never updating them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward

EPSILON = 1e-8  # the wrappers' default, used the same way by normalize()


def rms_state(rms: RunningMeanStd) -> dict:
    """Running statistics as tensors and numbers (weights-only loadable)."""
    return {"mean": torch.as_tensor(np.asarray(rms.mean, dtype=np.float64)),
            "var": torch.as_tensor(np.asarray(rms.var, dtype=np.float64)), "count": float(rms.count)}


def load_rms(rms: RunningMeanStd, state: dict) -> None:
    # keep the dtype the wrapper computes in, so a loaded agent normalises bit for bit the same
    rms.mean = state["mean"].numpy().astype(np.asarray(rms.mean).dtype)
    rms.var = state["var"].numpy().astype(np.asarray(rms.var).dtype)
    rms.count = state["count"]


def normalize(obs: np.ndarray, rms: RunningMeanStd, eps: float = EPSILON) -> np.ndarray:
    """Frozen observation normalisation, matching Gymnasium's NormalizeObservation."""
    return ((obs - rms.mean) / np.sqrt(rms.var + eps)).astype(np.float32)


class KeepEnvReward(gym.vector.VectorWrapper):
    """Puts the env's own rewards in ``infos["env_reward"]`` before NormalizeReward rescales them,
    so the logged reward rate stays in the env's units."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        infos["env_reward"] = rewards
        return obs, rewards, terminated, truncated, infos


class Normalizers:
    """The learner's observation statistics (``norm_obs``) and discounted-return statistics
    (``norm_reward``, scaled with ``gamma`` as in SB3's VecNormalize); either may be off (None)."""

    def __init__(self, obs_space, *, norm_obs: bool, norm_reward: bool, gamma: float):
        self.gamma = gamma
        self.obs_rms = RunningMeanStd(shape=obs_space.shape, dtype=obs_space.dtype) if norm_obs else None
        self.return_rms = RunningMeanStd(shape=()) if norm_reward else None

    def wrap(self, venv):
        """``venv`` with the normalising wrappers switched on, updating this object's statistics."""
        if self.obs_rms is not None:
            venv = NormalizeObservation(venv)
            venv.obs_rms = self.obs_rms
        if self.return_rms is not None:
            venv = NormalizeReward(KeepEnvReward(venv), gamma=self.gamma)
            venv.return_rms = self.return_rms
        return venv

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.obs_rms is None else normalize(obs, self.obs_rms)

    def state(self) -> dict:
        out = {}
        if self.obs_rms is not None:
            out["obs_rms"] = rms_state(self.obs_rms)
        if self.return_rms is not None:
            out["return_rms"] = rms_state(self.return_rms)
        return out

    def load_state(self, state: dict) -> None:
        if self.obs_rms is not None and "obs_rms" in state:
            load_rms(self.obs_rms, state["obs_rms"])
        if self.return_rms is not None and "return_rms" in state:
            load_rms(self.return_rms, state["return_rms"])
