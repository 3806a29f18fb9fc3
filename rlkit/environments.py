"""Environment creation shared by agents, evaluation and rendering.

One place decides the autoreset mode (NEXT_STEP, stated explicitly, docs/architecture.md §3),
the vectorisation (an env's native ``vector_entry_point`` when it has one, envs.classic_vector for
Acrobot, MountainCar, MountainCarContinuous and Pendulum, else Sync, or Async with one process per
copy when asked: ``async_envs``), episode statistics and seeding.
"""

from __future__ import annotations

import enum
import functools
import os
import random
import signal
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  registers the rlkit/* ids

AUTORESET = AutoresetMode.NEXT_STEP


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (if imported) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def make_env(env_id: str, env_kwargs: dict | None = None, render_mode: str | None = None) -> gym.Env:
    try:
        return gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    except (TypeError, ValueError) as exc:
        from rlkit.errors import UsageError

        raise UsageError(f"env_kwargs {env_kwargs} rejected by {env_id}: {exc}") from None


NATIVE_VECTOR_VAR = "RLKIT_NATIVE_VECTOR"


def native_vector_enabled(native: bool | None = None) -> bool:
    """Whether ``make_vec_env`` builds envs.classic_vector's numpy vector envs for the classic-control
    ids it covers: ``native`` when given, else the environment variable RLKIT_NATIVE_VECTOR
    (``0`` / ``false`` / ``no`` / ``off``: SyncVectorEnv; unset, ``1`` / ``true`` / ``yes`` / ``on``: native)."""
    if native is not None:
        return bool(native)
    value = os.environ.get(NATIVE_VECTOR_VAR, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    from rlkit.errors import UsageError

    raise UsageError(f"{NATIVE_VECTOR_VAR}={os.environ[NATIVE_VECTOR_VAR]!r}: expected 1 (native vector envs, "
                     "the default) or 0 (SyncVectorEnv)")


def make_vec_env(env_id: str, n_envs: int, seed: int | None = None, env_kwargs: dict | None = None,
                 record_stats: bool = True, frame_stack: int = 1, native: bool | None = None,
                 async_envs: bool = False) -> gym.vector.VectorEnv:
    """A vector env in NEXT_STEP autoreset mode, with RecordEpisodeStatistics, reset with ``seed``.

    ``frame_stack`` > 1 concatenates the last k observations (rlkit.framestack).

    Copy i is seeded with ``seed + i`` (Gymnasium's convention) by the first reset; later resets
    pass no seed so the envs' own generators carry on.

    Acrobot-v1, MountainCar-v0, MountainCarContinuous-v0 and Pendulum-v1 get envs.classic_vector's
    numpy vector envs (step for step identical to SyncVectorEnv); ``native=False``, or
    RLKIT_NATIVE_VECTOR=0 when ``native`` is None, builds SyncVectorEnv for them instead
    (``native_vector_enabled``). Ids with a ``vector_entry_point`` of their own are not affected.

    ``async_envs``: Gymnasium's AsyncVectorEnv instead of SyncVectorEnv, one spawn process per copy
    (Gymnasium 1.2 runs exactly one copy per process), observations through shared memory; the same
    observations, rewards, terminations and truncations as SyncVectorEnv for the same seed and
    actions (tests/test_env_processes.py). Each step costs this process a pipe round trip per copy
    (tens of µs, more on a busy machine), so it pays only for envs whose step costs far more, with
    a core per copy: Box2D's LunarLander, BipedalWalker, CarRacing (bench/env_throughput.py --processes).
    Ids with a vector env of their own (above) step every copy at once in numpy and refuse it
    (UsageError). The processes end with ``close()``, and with this process if it dies
    (rlkit.workers' parent watch); Ctrl-C is left to this process, which closes them.
    """
    spec = gym.spec(env_id)
    kwargs = dict(env_kwargs or {})
    if async_envs and (spec.vector_entry_point is not None or
                       (spec.id in envs.CLASSIC_VECTOR_IDS and native_vector_enabled(native))):
        from rlkit.errors import UsageError

        raise UsageError(f"async_envs: {env_id} has a numpy vector env that steps every copy at once; processes "
                         "per copy would only add their pipes (leave async_envs false)")
    if spec.vector_entry_point is not None:
        venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
    elif spec.id in envs.CLASSIC_VECTOR_IDS and native_vector_enabled(native):
        from envs.classic_vector import make_vector

        venv = make_vector(spec.id, n_envs, **kwargs)
    elif async_envs:
        venv = async_vector_env(env_id, n_envs, kwargs)
    else:
        venv = gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id, **kwargs) for _ in range(n_envs)], autoreset_mode=AUTORESET)
    mode = venv.metadata.get("autoreset_mode", AUTORESET)
    if mode != AUTORESET:
        raise RuntimeError(f"{env_id}: vector env uses autoreset mode {mode}, rlkit expects {AUTORESET}")
    if record_stats:
        venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    if frame_stack > 1:
        from rlkit.framestack import VectorFrameStack

        venv = VectorFrameStack(venv, frame_stack)
    if seed is not None:
        venv.action_space.seed(seed)
        venv.single_action_space.seed(seed)
    return venv


def async_vector_env(env_id: str, n_envs: int, env_kwargs: dict | None = None) -> gym.vector.AsyncVectorEnv:
    """AsyncVectorEnv of ``n_envs`` copies of ``gym.make(env_id, **env_kwargs)`` (each under ``CopyState``),
    NEXT_STEP autoreset, shared memory; what ``make_vec_env(..., async_envs=True)`` wraps."""
    # spawn, as rlkit.workers: the learner holds torch's threads (and maybe CUDA), which a fork
    # does not carry over. Each copy is built from the spec, so a child needs no registry entry.
    make_copy = functools.partial(_make_process_copy, gym.spec(env_id), dict(env_kwargs or {}), os.getpid())
    return gym.vector.AsyncVectorEnv([make_copy] * n_envs, shared_memory=True, context="spawn",
                                     autoreset_mode=AUTORESET)


def _make_process_copy(spec, kwargs: dict, creator_pid: int) -> gym.Env:
    """One copy of an AsyncVectorEnv, as SyncVectorEnv's ``gym.make(env_id, **kwargs)``, under ``CopyState``.
    AsyncVectorEnv also builds one in the creating process (for the spaces): only a copy in a
    process of its own ends with its parent and leaves Ctrl-C to it (which then closes the copies)."""
    if os.getpid() != creator_pid:
        from rlkit.workers import _end_with_parent

        _end_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return CopyState(gym.make(spec, **kwargs))


class CopyState(gym.Wrapper):
    """The outermost wrapper of each AsyncVectorEnv copy: its plain-data state for a checkpoint.

    AsyncVectorEnv's worker keeps the NEXT_STEP autoreset flag in a local variable; ``ended`` is the
    same flag, kept here so that it is saved with the env. A fresh worker's flag is False, so a copy
    restored with ``ended`` set makes the reset step itself: on the next ``step`` it resets and
    returns reward 0, not terminated, not truncated, as the worker would have.
    ``plain_state()`` (via ``AsyncVectorEnv.call``) and ``restore_state`` (via ``set_attr``) move the
    state as numpy arrays, so the copies never import torch."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.ended = False

    def reset(self, **kwargs):
        self.ended = False
        return self.env.reset(**kwargs)

    def step(self, action):
        if self.ended:  # only after a restore: a live worker resets an ended copy itself
            obs, info = self.reset()
            return obs, 0.0, False, False, info
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.ended = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def plain_state(self) -> dict | None:
        """``env_state`` of this copy with numpy arrays, or None when it is not plain data."""
        try:
            return _state_tree(self, set())
        except NotPlainData:
            return None

    @property
    def restore_state(self) -> None:  # set-only; AsyncVectorEnv.set_attr needs the name to exist
        return None

    @restore_state.setter
    def restore_state(self, state: dict) -> None:
        load_env_state(self, state)


@dataclass(frozen=True)
class EnvFactory:
    """How to build the training env. Every process that collects experience (the learner, a
    Hogwild worker, a Ray actor) builds its own copies from this small, picklable description.

    ``train_time_limit`` shortens the TimeLimit of training episodes only; evaluation, rendering
    and checkpoints use the registered limit. Truncation is bootstrapped, so on a continuing task
    a shorter limit only restarts more often: more data from the start states.
    """

    env_id: str
    env_kwargs: dict = field(default_factory=dict)
    frame_stack: int = 1
    train_time_limit: int | None = None
    async_envs: bool = False  # one process per copy (make_vec_env); evaluation stays in-process

    def make(self, n_envs: int, seed: int | None = None) -> gym.vector.VectorEnv:
        """``n_envs`` copies; copy i is seeded ``seed + i`` (a worker of rank r passes seed + r * n_envs).
        Observations that are not a Box (Discrete, Dict, ...) come out flattened (rlkit.spaces): the
        one place they are, so the rollout, normalisers and workers only ever see flat arrays."""
        from rlkit.spaces import FlattenObservations, needs_flattening

        kwargs = dict(self.env_kwargs)
        if self.train_time_limit is not None:
            kwargs["max_episode_steps"] = self.train_time_limit
        venv = make_vec_env(self.env_id, n_envs, seed=seed, env_kwargs=kwargs, frame_stack=self.frame_stack,
                            async_envs=self.async_envs)
        if needs_flattening(venv.single_observation_space):
            venv = FlattenObservations(venv)
        return venv

    def spaces(self) -> tuple:
        """(the env's observation space, the model's (frame-stacked) observation space, action space)."""
        env = gym.make(self.env_id, **self.env_kwargs)  # as make_vec_env builds each copy
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        if self.frame_stack > 1:
            from rlkit.errors import UsageError
            from rlkit.framestack import stacked_space

            try:
                return obs_space, stacked_space(obs_space, self.frame_stack), act_space
            except ValueError as exc:
                raise UsageError(f"frame_stack {self.frame_stack} on {self.env_id}: {exc}") from None
        return obs_space, obs_space, act_space


def finished_episodes(infos: dict) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of the episodes that ended this step (RecordEpisodeStatistics infos)."""
    if "episode" not in infos:
        return np.zeros(0), np.zeros(0, dtype=int)
    mask = infos["_episode"]
    return infos["episode"]["r"][mask], infos["episode"]["l"][mask]


def is_continuing(env_id: str) -> bool:
    """A continuing task never terminates; our envs say so in metadata['task']."""
    env = gym.make(env_id)
    try:
        return env.unwrapped.metadata.get("task") == "continuing"
    finally:
        env.close()


def env_reference(env_id: str, env_kwargs: dict | None = None) -> dict | None:
    """The env's reference score {name, score, metric}, or None if it provides none."""
    env = make_env(env_id, env_kwargs)
    try:
        ref = getattr(env.unwrapped, "reference", None)
        return ref() if callable(ref) else None
    finally:
        env.close()


def fraction_of_reference(value: float, reference: float) -> float:
    """1 - shortfall / |reference|: 1.0 at the reference, below 1 when worse, for either sign.

    For a positive reference this is value / reference; for a negative reward rate (ArmReach)
    a rate twice as negative as the reference scores 0.
    """
    if reference == 0:
        return float("nan")
    return float(1.0 - (reference - value) / abs(reference))


# --- env state for exact resume ------------------------------------------------------------
# A resumed run must continue the episodes the killed one was in, not replay step 0. Envs are
# not picklable-safe (and checkpoints never unpickle objects), so the state is taken as plain
# data: every array, number, string and numpy Generator state along the wrapper chain, down
# through sub-envs, wrappers and helper objects of gymnasium, envs/ and rlkit/. Spaces (their RNG is not used by
# rlkit's agents after seeding), specs and running statistics (rlkit.normalization saves those)
# are left out, as is anything else that is not plain data (functions, renderers).
_SKIP = object()
# Physics engines keep an env's state in C++ objects no plain-data snapshot can hold: an env that
# holds one (Box2D: LunarLander, CarRacing, BipedalWalker; MuJoCo) restarts its episodes on resume.
_ENGINES = ("Box2D", "mujoco")


class NotPlainData(Exception):
    """The env's state cannot be taken as plain data (a physics engine, a reference cycle)."""


def _is_stateful_object(value) -> bool:
    from gymnasium.envs.registration import EnvSpec
    from gymnasium.wrappers.utils import RunningMeanStd

    if isinstance(value, (gym.Space, EnvSpec, RunningMeanStd)) or not hasattr(value, "__dict__"):
        return False
    return type(value).__module__.split(".")[0] in ("gymnasium", "envs", "rlkit")


def _pack(value, seen: set):
    module = getattr(type(value), "__module__", None) or ""  # some SWIG types have none
    if module.split(".")[0] in _ENGINES:
        raise NotPlainData(f"{module}.{type(value).__name__}")
    if isinstance(value, enum.Enum):  # modes and options: configuration, not state
        return _SKIP
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        value = np.asarray(value)
    elif value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":  # objects, records: not plain numbers
            return _SKIP
        return {"__array__": np.ascontiguousarray(value).copy(), "scalar": value.ndim == 0}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, (list, tuple, deque)):
        items = [_pack(v, seen) for v in value]
        if any(item is _SKIP for item in items):
            return _SKIP
        kind = "deque" if isinstance(value, deque) else type(value).__name__
        return {"__seq__": items, "kind": kind, "maxlen": getattr(value, "maxlen", None)}
    if _is_stateful_object(value):
        return {"__object__": _state_tree(value, seen)}
    return _SKIP


def env_state(obj) -> dict:
    """The plain-data state of an env (or vector env, or wrapper chain), weights-only loadable
    (arrays as torch tensors). Raises NotPlainData for an env whose state is not all plain data
    (see ``_ENGINES``). An AsyncVectorEnv's copies give theirs from their processes (``CopyState``)."""
    return _map_arrays(_state_tree(obj, set()), _to_tensor)


def _to_tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def _to_numpy(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.numpy()


def _map_arrays(tree, convert):
    """``tree`` with every packed array (``{"__array__": a}``) passed through ``convert``."""
    if isinstance(tree, dict):
        return {k: convert(v) if k == "__array__" else _map_arrays(v, convert) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_arrays(v, convert) for v in tree]
    return tree


def _state_tree(obj, seen: set) -> dict:
    """``env_state`` with numpy arrays."""
    if isinstance(obj, gym.vector.AsyncVectorEnv):
        # Its copies live in other processes; its own attributes are pipes and the shared-memory
        # observations, which the rollout keeps (and which must stay the shared buffer).
        copies = obj.call("plain_state")
        if any(c is None for c in copies):
            spec = getattr(obj, "spec", None)
            raise NotPlainData(f"a copy of {spec.id if spec is not None else 'the env'} in its process")
        return {"__copies__": list(copies)}
    if id(obj) in seen:  # an object that refers back to its env: not a tree of plain data
        raise NotPlainData(f"a reference cycle through {type(obj).__name__}")
    seen.add(id(obj))
    out, caches = {}, getattr(type(obj), "_cache_attrs", ())  # an env's own list of caches, not state
    for name, value in vars(obj).items():
        if name in caches:
            continue
        packed = _pack(value, seen)
        if packed is not _SKIP:
            out[name] = packed
    return out


def _unpack(packed, current):
    if not isinstance(packed, dict):
        return packed
    if "__array__" in packed:
        array = _to_numpy(packed["__array__"]).copy()
        return array[()] if packed["scalar"] else array
    if "__generator__" in packed:
        state = packed["__generator__"]
        rng = current if isinstance(current, np.random.Generator) else \
            np.random.Generator(getattr(np.random, state["bit_generator"])())
        rng.bit_generator.state = state
        return rng
    if "__seq__" in packed:
        olds = list(current) if isinstance(current, (list, tuple, deque)) else []
        items = [_unpack(p, olds[i] if i < len(olds) else None) for i, p in enumerate(packed["__seq__"])]
        if packed["kind"] == "deque":
            return deque(items, maxlen=packed["maxlen"])
        return tuple(items) if packed["kind"] == "tuple" else items
    if "__object__" in packed and current is not None:
        load_env_state(current, packed["__object__"])
        return current
    raise ValueError("not an env state")


def load_env_state(obj, state: dict) -> None:
    """Put back what ``env_state`` took, into an env built the same way. Only attributes the
    fresh env already has are set, so a file cannot add any."""
    if isinstance(obj, gym.vector.AsyncVectorEnv):
        copies = state.get("__copies__")
        if not isinstance(copies, list) or len(copies) != obj.num_envs:
            raise ValueError("not an env state")
        obj.set_attr("restore_state", [_map_arrays(c, _to_numpy) for c in copies])
        return
    for name, packed in state.items():
        if name in vars(obj):
            setattr(obj, name, _unpack(packed, getattr(obj, name)))
