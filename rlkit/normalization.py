"""Observation and return running statistics, owned by the learner.

Gymnasium's vector wrappers ``NormalizeObservation`` and ``NormalizeReward`` do the arithmetic;
``Normalizers`` only decides who owns their statistics. The learner holds one ``Normalizers``;
every env it wraps points its wrapper at these same ``RunningMeanStd`` objects, so a local
collector updates the learner's statistics directly, and a remote worker (docs/architecture.md,
workers) receives them with the weights as plain data (``state()`` / ``load_state()``).
``predict`` uses the frozen statistics (``normalize_obs``), never updating them.

Observations that are not a Box arrive flattened (rlkit.spaces): statistics are kept for the whole
flat vector, but only its non-image Box parts are normalised (and clipped); one-hot, binary and
pixel parts pass unchanged (``PartlyNormalizeObservation``), as SB3's VecNormalize normalises only
Box keys. A space with no such part (FrozenLake's Discrete) is not normalised at all.

A3C's Hogwild workers (agents/a3c.py) share the learner's statistics instead: ``share_memory()``
moves them into shared memory (``SharedRMS``), and every worker's wrappers update them in place.

A remote worker's ``Normalizers`` is built with ``record=True``: besides updating its copy of the
learner's statistics as the local ones do, it keeps the exact moments of what it saw since the
last ``take_updates()``, and the learner folds every worker's moments into its own statistics
with ``merge_updates`` (Chan et al.'s parallel update, exact in any order).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import ClipReward, NormalizeObservation, NormalizeReward, TransformObservation

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


class PartlyNormalizeObservation(NormalizeObservation):
    """NormalizeObservation of the entries ``mask`` of a flat observation (then clipped to ±clip when
    given); the other entries (one-hot, binary, pixels) are left as the env gave them."""

    def __init__(self, env, mask: np.ndarray, clip: float | None):
        super().__init__(env)
        self.mask, self.clip = mask, clip

    def observations(self, observations):
        return keep_unnormalized(super().observations(observations), observations, self.mask, self.clip)


def keep_unnormalized(normalized: np.ndarray, raw: np.ndarray, mask: np.ndarray, clip: float | None) -> np.ndarray:
    out = np.asarray(normalized, dtype=np.float32)
    if clip is not None:
        out = np.clip(out, -clip, clip)
    out[..., ~mask] = raw[..., ~mask]
    return out


class KeepEnvReward(gym.vector.VectorWrapper):
    """Puts the env's own rewards in ``infos["env_reward"]`` before NormalizeReward rescales them,
    so the logged reward rate stays in the env's units."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        infos["env_reward"] = rewards
        return obs, rewards, terminated, truncated, infos


class Normalizers:
    """The learner's observation statistics (``norm_obs``) and discounted-return statistics
    (``norm_reward``, scaled with ``gamma`` as in SB3's VecNormalize); either may be off (None).

    ``clip``: the normalised observations and rewards are clipped to [-clip, clip], as SB3's
    VecNormalize does (its clip_obs and clip_reward, both 10 by default); None leaves them as
    Gymnasium's wrappers give them. Without it, the first goal reward of a sparse task divided by a
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
        self.obs_rms = rms(shape=obs_space.shape, dtype=obs_space.dtype) if norm_obs else None
        self.return_rms = rms(shape=()) if norm_reward else None

    def wrap(self, venv):
        """``venv`` with the normalising wrappers switched on, updating this object's statistics."""
        if self.obs_rms is not None and self.obs_mask is not None:
            venv = PartlyNormalizeObservation(venv, self.obs_mask, self.clip)
            venv.obs_rms = self.obs_rms
        elif self.obs_rms is not None:
            venv = NormalizeObservation(venv)
            venv.obs_rms = self.obs_rms
            if self.clip is not None:
                venv = TransformObservation(venv, self._clip_obs)
        if self.return_rms is not None:
            venv = NormalizeReward(KeepEnvReward(venv), gamma=self.gamma)
            venv.return_rms = self.return_rms
            if self.clip is not None:
                venv = ClipReward(venv, -self.clip, self.clip)
        return venv

    def _clip_obs(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(obs, -self.clip, self.clip)

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_rms is None:
            return obs
        if self.obs_mask is not None:
            return keep_unnormalized(normalize(obs, self.obs_rms), obs, self.obs_mask, self.clip)
        obs = normalize(obs, self.obs_rms)
        return obs if self.clip is None else self._clip_obs(obs)

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
