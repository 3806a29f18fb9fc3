"""Observation and return running statistics, owned by the learner.

The wrappers ``NormalizeObs`` and ``NormalizeReturn`` do SB3's VecNormalize arithmetic (the
statistics in float64, ``epsilon`` 1e-8) under Gymnasium's NEXT_STEP autoreset (docs/architecture.md
§3); ``tests/test_equivalence.py`` checks their statistics and outputs against VecNormalize's.
Per env copy and step, as VecNormalize:

- observations: the statistics are updated with the observation the policy acts on next, then it is
  normalised (and clipped). An episode's final observation (returned at its end step under
  NEXT_STEP) is normalised but never counted, as VecNormalize never counts ``terminal_observation``;
  the new episode's first observation is counted at the reset step.
- rewards: the discounted return is updated (``returns = returns * gamma + reward``), its statistics
  are updated, the reward is divided by the return's std (and clipped), and the return restarts at
  every episode end, terminated or truncated. The reset step is no transition: its 0 reward is
  neither added nor counted. (Gymnasium's own ``NormalizeReward`` zeroes the return *before* adding
  a terminal reward, so that reward is carried into the next episode, and never zeroes it on
  truncation: over random BipedalWalker-v3 actions its return std came out 2.23x VecNormalize's in
  issue 35's review, 5.2x with 8 copies x 3000 steps and gamma 0.99.)

``Normalizers`` decides who owns the statistics. The learner holds one ``Normalizers``;
every env it wraps points its wrapper at these same ``RunningMeanStd`` objects, so a local
collector updates the learner's statistics directly, and a remote worker (docs/architecture.md,
workers) receives them with the weights as plain data (``state()`` / ``load_state()``).
``predict`` uses the frozen statistics (``normalize_obs``), never updating them.

Observations that are not a Box arrive flattened (rlkit.spaces): statistics are kept for the whole
flat vector, but only its non-image Box parts are normalised (and clipped); one-hot, binary and
pixel parts pass unchanged (``NormalizeObs``'s ``mask``), as SB3's VecNormalize normalises only
Box keys. A space with no such part (FrozenLake's Discrete) is not normalised at all.

A3C's Hogwild workers (agents/a3c.py) share the learner's statistics instead: ``share_memory()``
moves them into shared memory (``SharedRMS``), and every worker's wrappers update them in place.

A remote worker's ``Normalizers`` is built with ``record=True``: besides updating its copy of the
learner's statistics as the local ones do, it keeps the exact moments of what it saw since the
last ``take_updates()``, and the learner folds every worker's moments into its own statistics
with ``merge_updates`` (Chan et al.'s parallel update, exact in any order).
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd

EPSILON = 1e-8  # VecNormalize's (and Gymnasium's wrappers') default, used the same way by normalize()


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
    """Frozen observation normalisation, as VecNormalize's (float32 out)."""
    return ((obs - rms.mean) / np.sqrt(rms.var + eps)).astype(np.float32)


class RecordingRMS(RunningMeanStd):
    """``RunningMeanStd`` that also accumulates, in ``new``, the moments of the values it was given
    since it was last emptied (count 0, no prior: exact)."""

    def __init__(self, shape=(), dtype=np.float64):
        super().__init__(shape=shape, dtype=dtype)
        self.new = RunningMeanStd(epsilon=0.0, shape=shape)

    def update(self, x):
        super().update(x)
        self.new.update(np.asarray(x, dtype=np.float64))

    def take_new(self) -> dict | None:
        new, self.new = self.new, RunningMeanStd(epsilon=0.0, shape=np.shape(self.mean))
        return {"mean": new.mean, "var": new.var, "count": float(new.count)} if new.count > 0 else None


class SharedRMS(RunningMeanStd):
    """``RunningMeanStd`` whose moments are torch tensors in shared memory: Hogwild workers update
    one set of statistics as they update one set of weights, lock-free: a worker killed inside a
    lock would stall the rest (docs/architecture.md, workers). Two workers updating at once lose
    one of the two updates, which is frequent when env steps are as cheap as the update (11% of
    CartPole's steps with two workers in one CI run); the statistics stay a valid mean and
    variance, over fewer samples. Pickled to a spawned process, the tensors keep pointing at the
    same memory."""

    def __init__(self, epsilon=1e-4, shape=(), dtype=np.float64):
        self.moments = {"mean": torch.from_numpy(np.zeros(shape, dtype)).share_memory_(),
                        "var": torch.from_numpy(np.ones(shape, dtype)).share_memory_(),
                        "count": torch.tensor(float(epsilon), dtype=torch.float64).share_memory_()}

    def _get(name):
        return property(lambda self: self.moments[name].numpy(),
                        lambda self, value: self.moments[name].copy_(torch.as_tensor(np.asarray(value))))

    # RunningMeanStd.update_from_moments assigns these three: the setters copy into shared memory.
    mean, var = _get("mean"), _get("var")
    count = property(lambda self: float(self.moments["count"]),
                     lambda self, value: self.moments["count"].fill_(float(value)))
    del _get


class NormalizeObs(gym.vector.VectorWrapper):
    """SB3's VecNormalize observation normalisation under NEXT_STEP autoreset (module docstring):
    ``obs_rms`` is updated with every observation except an ended episode's final one, then the
    observations are normalised; ``mask`` (None: all) names the entries to normalise (then clipped
    to ±clip when given), the others (one-hot, binary, pixels) are left as the env gave them."""

    def __init__(self, env, obs_rms: RunningMeanStd, mask: np.ndarray | None = None, clip: float | None = None,
                 epsilon: float = EPSILON):
        super().__init__(env)
        self.obs_rms, self.mask, self.clip, self.epsilon = obs_rms, mask, clip, epsilon

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.obs_rms.update(obs)
        return normalized(obs, self.obs_rms, self.mask, self.clip, self.epsilon), infos

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        fresh = ~np.logical_or(terminated, truncated)  # an ended copy's observation is its final one
        if fresh.any():
            self.obs_rms.update(obs[fresh])
        return normalized(obs, self.obs_rms, self.mask, self.clip, self.epsilon), rewards, terminated, truncated, infos


def normalized(obs: np.ndarray, rms: RunningMeanStd, mask: np.ndarray | None, clip: float | None,
               eps: float = EPSILON) -> np.ndarray:
    """``obs`` normalised with frozen statistics (``mask``: only those entries), clipped to ±clip."""
    out = normalize(obs, rms, eps)
    if clip is not None:
        out = np.clip(out, -clip, clip)
    if mask is not None:
        out[..., ~mask] = obs[..., ~mask]
    return out


class KeepEnvReward(gym.vector.VectorWrapper):
    """Puts the env's own rewards in ``infos["env_reward"]`` before NormalizeReturn rescales them,
    so the logged reward rate stays in the env's units."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        infos["env_reward"] = rewards
        return obs, rewards, terminated, truncated, infos


class NormalizeReturn(gym.vector.VectorWrapper):
    """SB3's VecNormalize reward scaling under NEXT_STEP autoreset (module docstring): add the
    reward to the discounted return, update ``return_rms``, scale (and clip to ±clip when given),
    then restart the return of every copy whose episode ended, terminated or truncated. A copy's
    reset step (the step after its episode ended) is skipped: no reward, no update."""

    def __init__(self, env, return_rms: RunningMeanStd, gamma: float, clip: float | None = None,
                 epsilon: float = EPSILON):
        super().__init__(env)
        self.return_rms, self.gamma, self.clip, self.epsilon = return_rms, gamma, clip, epsilon
        self.returns = np.zeros(self.num_envs)
        self.resetting = np.zeros(self.num_envs, dtype=bool)  # the copies due a reset step

    def reset(self, *, seed=None, options=None):
        self.returns[:] = 0.0
        self.resetting[:] = False
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        live = ~self.resetting
        self.returns[live] = self.returns[live] * self.gamma + rewards[live]
        if live.any():
            self.return_rms.update(self.returns[live])
        scaled = rewards / np.sqrt(self.return_rms.var + self.epsilon)
        if self.clip is not None:
            scaled = np.clip(scaled, -self.clip, self.clip)
        self.resetting = np.logical_or(terminated, truncated)
        self.returns[self.resetting] = 0.0
        return obs, scaled, terminated, truncated, infos


class Normalizers:
    """The learner's observation statistics (``norm_obs``) and discounted-return statistics
    (``norm_reward``, scaled with ``gamma`` as in SB3's VecNormalize); either may be off (None).

    ``clip``: the normalised observations and rewards are clipped to [-clip, clip], as SB3's
    VecNormalize does (its clip_obs and clip_reward, both 10 by default: ``norm_clip: 10``); None
    leaves them unclipped. Without it, the first goal reward of a sparse task divided by a
    return std that only saw small costs can be a thousand times larger than anything before it.
    """

    def __init__(self, obs_space, *, norm_obs: bool, norm_reward: bool, gamma: float, clip: float | None = None,
                 record: bool = False):
        from rlkit.spaces import flat_space, normalized_parts

        self.gamma, self.clip = gamma, clip
        rms = RecordingRMS if record else RunningMeanStd
        # A flattened Dict / Discrete / ... space (rlkit.spaces): its Box parts only, if it has any.
        self.obs_mask = normalized_parts(obs_space)
        norm_obs = norm_obs and (self.obs_mask is None or bool(self.obs_mask.any()))
        obs_space = flat_space(obs_space)
        # float64, as VecNormalize keeps them (Gymnasium's wrapper would use the space's float32)
        self.obs_rms = rms(shape=obs_space.shape) if norm_obs else None
        self.return_rms = rms(shape=()) if norm_reward else None

    def wrap(self, venv):
        """``venv`` with the normalising wrappers switched on, updating this object's statistics."""
        if self.obs_rms is not None:
            venv = NormalizeObs(venv, self.obs_rms, self.obs_mask, self.clip)
        if self.return_rms is not None:
            venv = NormalizeReturn(KeepEnvReward(venv), self.return_rms, self.gamma, self.clip)
        return venv

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_rms is None:
            return obs
        return normalized(obs, self.obs_rms, self.obs_mask, self.clip)

    def state(self) -> dict:
        out = {}
        if self.obs_rms is not None:
            out["obs_rms"] = rms_state(self.obs_rms)
        if self.return_rms is not None:
            out["return_rms"] = rms_state(self.return_rms)
        return out

    def share_memory(self) -> Normalizers:
        """Move the statistics into shared memory (``SharedRMS``, same values) for Hogwild workers,
        before any env is wrapped with them; returns self."""
        for name, rms in self._named():
            shared = SharedRMS(shape=np.shape(rms.mean), dtype=np.asarray(rms.mean).dtype)
            shared.mean, shared.var, shared.count = rms.mean, rms.var, rms.count
            setattr(self, name, shared)
        return self

    def frozen_copy(self) -> Normalizers:
        """These statistics as they are now, in private memory (plain arrays): what A3C's learner
        evaluates and checkpoints while its workers go on updating the shared ones. Without
        statistics there is nothing to freeze: self."""
        named = self._named()
        if not named:
            return self
        frozen = copy.copy(self)
        for name, rms in named:
            plain = RunningMeanStd(shape=np.shape(rms.mean), dtype=np.asarray(rms.mean).dtype)
            plain.mean, plain.var, plain.count = np.array(rms.mean), np.array(rms.var), float(rms.count)
            setattr(frozen, name, plain)
        return frozen

    def _named(self):
        return [(name, rms) for name, rms in (("obs_rms", self.obs_rms), ("return_rms", self.return_rms))
                if rms is not None]

    def take_updates(self) -> dict:
        """A recording worker's new moments since the last call (plain numpy, for the learner)."""
        return {name: rms.take_new() for name, rms in self._named()}

    def merge_updates(self, updates: dict) -> None:
        """Fold one worker's ``take_updates()`` into these (the learner's) statistics."""
        for name, rms in self._named():
            moments = updates.get(name)
            if moments is not None:
                rms.update_from_moments(moments["mean"], moments["var"], moments["count"])

    def load_state(self, state: dict) -> None:
        if self.obs_rms is not None and "obs_rms" in state:
            load_rms(self.obs_rms, state["obs_rms"])
        if self.return_rms is not None and "return_rms" in state:
            load_rms(self.return_rms, state["return_rms"])
