"""The observation spaces the hand-written agents accept, and the one place they become flat vectors.

The on-policy agents store, normalise, ship (rollout workers) and checkpoint observations as arrays.
A Box observation stays as it is: vectors go to an MLP, uint8 (H, W, C) images to a CNN. Every other
space SB3's preprocessing accepts (and Tuple) is flattened to one float32 vector, as
``gymnasium.spaces.flatten`` lays it out (tests/test_spaces.py pins the layout to it):

- Discrete(n) -> a one-hot of n; MultiDiscrete(nvec) -> one one-hot per dimension, concatenated;
- MultiBinary -> its bits;
- Dict and Tuple (nested too) -> their parts, each flattened, concatenated (Dict keys in the space's
  order); a Box part as its values (an image part as its pixels, 0-255).

``FlattenObservations`` flattens the training env's observations (rlkit.environments.EnvFactory.make),
so ``Rollout``, ``Normalizers``, rollout workers and checkpoints see one flat Box. ``model_input`` does
the same to what ``predict`` is given: the env's own observation (a dict for a Dict env, an int for
Discrete), one or a batch, as evaluation, ``render`` and users pass it. The model keeps the original
space; ``leaves`` tells it where each part lies in the flat vector (rlkit.networks.MultiInputTorso cuts
image parts out and reshapes them for their CNN).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEAF_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
OBSERVATION_SPACES = (*LEAF_SPACES, spaces.Dict, spaces.Tuple)
ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def is_image_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


@dataclass(frozen=True)
class Leaf:
    """One part of a flattened observation: its path (``goal``, ``0.image``), space and place."""

    path: str
    space: spaces.Space
    start: int
    size: int


def _leaf_size(space: spaces.Space) -> int:
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    return int(np.prod(space.shape))


def _children(space: spaces.Space):
    if isinstance(space, spaces.Dict):
        return list(space.spaces.items())
    return list(enumerate(space.spaces))


def leaves(space: spaces.Space) -> list[Leaf]:
    """The parts of ``space`` in flattening order (a Box, Discrete, ... is its own single leaf)."""
    out: list[Leaf] = []

    def walk(s: spaces.Space, path: str) -> None:
        if isinstance(s, (spaces.Dict, spaces.Tuple)):
            for key, child in _children(s):
                walk(child, f"{path}.{key}" if path else str(key))
        else:
            start = out[-1].start + out[-1].size if out else 0
            out.append(Leaf(path, s, start, _leaf_size(s)))

    walk(space, "")
    return out


def check_observation_space(space: spaces.Space) -> None:
    """ValueError naming the part of ``space`` the hand-written agents cannot take (Text, Graph, ...)."""
    def walk(s: spaces.Space, path: str) -> None:
        where = f" (at '{path}')" if path else ""
        if isinstance(s, (spaces.Dict, spaces.Tuple)):
            if not s.spaces:
                raise ValueError(f"an empty {type(s).__name__} observation space{where}")
            for key, child in _children(s):
                walk(child, f"{path}.{key}" if path else str(key))
        elif not isinstance(s, LEAF_SPACES):
            raise ValueError(f"observation part {s}{where} is not one of "
                             f"{', '.join(t.__name__ for t in OBSERVATION_SPACES)}")

    walk(space, "")


def needs_flattening(space: spaces.Space) -> bool:
    return not isinstance(space, spaces.Box)


def has_image(space: spaces.Space) -> bool:
    return any(is_image_space(leaf.space) for leaf in leaves(space))


def flat_space(space: spaces.Space) -> spaces.Box:
    """The space of the model's input: a Box as it is, anything else as one float32 vector."""
    if not needs_flattening(space):
        return space
    low, high = [], []
    for leaf in leaves(space):
        if isinstance(leaf.space, spaces.Box):
            low.append(np.asarray(leaf.space.low, np.float32).ravel())
            high.append(np.asarray(leaf.space.high, np.float32).ravel())
        else:
            low.append(np.zeros(leaf.size, np.float32))
            high.append(np.ones(leaf.size, np.float32))
    return spaces.Box(np.concatenate(low), np.concatenate(high), dtype=np.float32)


def normalized_parts(space: spaces.Space) -> np.ndarray | None:
    """Which entries of the flat vector ``norm_obs`` normalises: None for a Box (all of them);
    otherwise those of non-image Box parts only. One-hot, binary and pixel parts are left as they
    are, as SB3's VecNormalize does (it normalises Box keys only, and its CNN scales pixels)."""
    if not needs_flattening(space):
        return None
    mask = np.zeros(flat_space(space).shape[0], dtype=bool)
    for leaf in leaves(space):
        if isinstance(leaf.space, spaces.Box) and not is_image_space(leaf.space):
            mask[leaf.start:leaf.start + leaf.size] = True
    return mask


def _leaf_shape(space: spaces.Space) -> tuple:
    if isinstance(space, spaces.Discrete):
        return ()
    if isinstance(space, spaces.MultiDiscrete):
        return tuple(space.nvec.shape)
    return tuple(space.shape)


def batch_size(space: spaces.Space, obs) -> int | None:
    """None for one observation of ``space``, else the number of observations in the batch."""
    s, x = space, obs
    while isinstance(s, (spaces.Dict, spaces.Tuple)):  # the first leaf decides
        key, s = _children(s)[0]
        x = x[key]
    shape, want = np.shape(x), _leaf_shape(s)
    if shape == want:
        return None
    if shape[1:] == want and len(shape) == len(want) + 1:
        return shape[0]
    raise ValueError(f"observation of shape {shape} fits neither {s} nor a batch of it")


def flatten(space: spaces.Space, obs, n: int) -> np.ndarray:
    """A batch of ``n`` observations of ``space`` (a vector env's layout: a dict of batched arrays
    for a Dict) -> (n, D) float32, ``gymnasium.spaces.flatten`` applied to each row."""
    if isinstance(space, spaces.Dict):
        return np.concatenate([flatten(s, obs[k], n) for k, s in space.spaces.items()], axis=1)
    if isinstance(space, spaces.Tuple):
        return np.concatenate([flatten(s, o, n) for s, o in zip(space.spaces, obs)], axis=1)
    if isinstance(space, spaces.Discrete):
        index = np.asarray(obs, dtype=np.int64).reshape(n) - int(space.start)
        return np.eye(int(space.n), dtype=np.float32)[index]
    if isinstance(space, spaces.MultiDiscrete):
        index = (np.asarray(obs, dtype=np.int64) - space.start).reshape(n, -1)
        nvec = space.nvec.ravel()
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        out = np.zeros((n, int(nvec.sum())), dtype=np.float32)
        out[np.arange(n)[:, None], offsets + index] = 1.0
        return out
    return np.asarray(obs, dtype=np.float32).reshape(n, -1)  # Box, MultiBinary


def model_input(space: spaces.Space, obs) -> tuple[np.ndarray, bool]:
    """What ``predict`` was given -> (a batch the model takes, whether it was one observation).
    A Box observation keeps its dtype (uint8 pixels stay uint8); anything else is flattened."""
    if not needs_flattening(space):
        obs = np.asarray(obs)
        single = obs.shape == space.shape
        return (obs[None] if single else obs), single
    n = batch_size(space, obs)
    return flatten(space, obs, 1 if n is None else n), n is None


def batch_of_one(obs):
    """One observation as a batch of one, in a vector env's layout (a dict of arrays for a Dict, a
    tuple of arrays for a Tuple), as every agent's ``predict`` takes a batch."""
    if isinstance(obs, dict):
        return {k: batch_of_one(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(batch_of_one(v) for v in obs)
    return np.asarray(obs)[None]


class FlattenObservations(gym.vector.VectorObservationWrapper):
    """The training env's observations as flat float32 vectors (``flatten``); for non-Box spaces."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        self.original_space = env.single_observation_space
        self.single_observation_space = flat_space(self.original_space)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations):
        return flatten(self.original_space, observations, self.num_envs)
