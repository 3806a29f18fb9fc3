"""Shared machinery of the native numpy vector envs.

Two pieces:

* :class:`UniformStreams` gives copy ``i`` of a vector env its own ``np.random.Generator``,
  seeded exactly as the single env's ``self.np_random`` would be, and serves its uniform
  draws from a per-copy buffer. Every single env in this package draws its randomness only as
  ``self.np_random.random()`` doubles, and ``Generator.random(k)`` yields the same doubles as
  ``k`` scalar calls, so copy ``i`` sees exactly the numbers the single env would see, while the
  Python-level generator calls are paid once per buffer refill instead of once per step.
* :class:`NativeVectorEnv`: reset / seeding / autoreset / time-limit bookkeeping identical to
  ``SyncVectorEnv`` over ``gym.make(id)`` (TimeLimit included). Subclasses implement three
  hooks on whole batches: ``_reset_copies``, ``_step_copies`` and ``_observe``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a ValueError naming it and the accepted range."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_float(name: str, value, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with low_open), else ValueError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = bool(np.isfinite(value))
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value <= high
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{lo}, {hi}], got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` as a bool (True/False, numpy bools included), else ValueError."""
    if value is True or value is False or type(value) is np.bool_:
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value, choices) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_render_mode(render_mode, modes) -> None:
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"render_mode must be None or one of {list(modes)}, got {render_mode!r}")


class UniformStreams:
    """Per-copy ``Generator``s with buffered uniform [0, 1) draws.

    ``buf[i, ptr[i]:]`` holds the next unconsumed doubles of copy ``i``'s generator, in order.
    ``_bound`` is an upper bound on ``ptr`` (a scalar, so the refill check costs nothing);
    when a draw could run past the end, every copy's buffer is compacted and topped up.
    """

    def __init__(self, num_envs: int, buffer_size: int | None = None):
        if buffer_size is None:
            buffer_size = int(np.clip(2**19 // max(num_envs, 1), 64, 1024))
        self.n = num_envs
        self.size = buffer_size
        self.rngs: list[np.random.Generator | None] = [None] * num_envs
        self.seeds: list[int | None] = [None] * num_envs
        self.buf = np.zeros((num_envs, buffer_size), dtype=np.float64)
        self.ptr = np.full(num_envs, buffer_size, dtype=np.int64)
        self._bound = buffer_size
        self._rows = np.arange(num_envs)
        self._row_starts = self._rows * buffer_size
        self._cols = np.arange(buffer_size)

    def seed(self, i: int, seed: int | None) -> None:
        """(Re)seed copy i like ``Env.reset(seed=seed)`` does; None keeps an existing generator."""
        if seed is None and self.rngs[i] is not None:
            return
        rng, used = seeding.np_random(seed)
        self.rngs[i] = rng
        self.seeds[i] = used
        self.buf[i] = rng.random(self.size)
        self.ptr[i] = 0

    def _refill(self) -> None:
        ptr = self.ptr
        src = np.minimum(ptr[:, None] + self._cols[None, :], self.size - 1)
        self.buf = np.take_along_axis(self.buf, src, axis=1)
        for i in np.flatnonzero(ptr):
            c = int(ptr[i])
            self.buf[i, self.size - c:] = self.rngs[i].random(c)
        ptr[:] = 0
        self._bound = 0

    def _ensure(self, k: int) -> None:
        if self._bound + k > self.size:
            self._refill()
        self._bound += k

    def peek1(self) -> np.ndarray:
        """The next draw of every copy, without consuming it (then call :meth:`advance`)."""
        self._ensure(1)
        return self.buf.ravel().take(self._row_starts + self.ptr)

    def advance(self, mask: np.ndarray | None) -> None:
        """Consume one draw for the copies in ``mask`` (all copies when None)."""
        if mask is None:
            self.ptr += 1
        else:
            self.ptr += mask

    def take(self, idx: np.ndarray, k: int) -> np.ndarray:
        """Consume the next ``k`` draws of each copy in ``idx``: array of shape (len(idx), k)."""
        self._ensure(k)
        p = self.ptr[idx]
        out = self.buf[idx[:, None], p[:, None] + self._cols[None, :k]]
        self.ptr[idx] = p + k
        return out


class NativeVectorEnv(VectorEnv):
    """Base of the numpy vector envs: seeding, autoreset and TimeLimit exactly like SyncVectorEnv.

    Seeds map like ``SyncVectorEnv``: ``reset(seed=s)`` seeds copy ``i`` with ``s + i``, a list
    seeds copy ``i`` with ``seed[i]``, ``None`` keeps the generators (fresh random ones at the
    first reset). ``max_episode_steps`` (passed by ``gym.make_vec`` from the registration)
    truncates exactly like ``gymnasium.wrappers.TimeLimit``. ``autoreset_mode`` accepts the three
    ``AutoresetMode`` values; NEXT_STEP is the default (and SyncVectorEnv's).

    Subclasses set ``single_observation_space`` / ``single_action_space`` and implement
    ``_reset_copies(idx)`` (idx: int array of copies to reset), ``_step_copies(actions, active)``
    (active: bool mask of copies that really step, or None for all; copies outside it must not
    consume random draws, their state is overwritten by a reset right after) returning
    ``(rewards float64, terminated bool)``, and ``_observe()`` returning a fresh batch.
    """

    def _init_vector(self, num_envs: int, max_episode_steps: int | None, autoreset_mode,
                     render_mode: str | None, buffer_size: int | None = None) -> None:
        self.num_envs = check_int("num_envs", num_envs, 1)
        if max_episode_steps is not None:
            max_episode_steps = check_int("max_episode_steps", max_episode_steps, 1)
        self.max_episode_steps = max_episode_steps
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, "
                             f"got {autoreset_mode!r}") from None
        self.render_mode = render_mode
        self.metadata = dict(type(self).metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self._streams = UniformStreams(self.num_envs, buffer_size)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._prev_done = np.zeros(self.num_envs, dtype=np.bool_)
        self._all = np.arange(self.num_envs)
        self._has_reset = False
        self._renderer_env = None

    # ------------------------------------------------------------------ hooks
    def _reset_copies(self, idx: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step_copies(self, actions, active: np.ndarray | None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ API
    @property
    def np_random_seed(self) -> tuple[int | None, ...]:
        """The seed each copy's generator was last seeded with (like SyncVectorEnv's)."""
        return tuple(self._streams.seeds)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        n = self.num_envs
        if seed is None:
            seeds = [None] * n
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed list must have num_envs={n} entries, got {len(seeds)}")
        mask = None
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError("options['reset_mask'] must be a bool array of shape (num_envs,) "
                                 "with at least one True")
        if mask is None or not self._has_reset:
            idx = self._all
        else:
            idx = np.flatnonzero(mask)
        for i in idx:
            self._streams.seed(int(i), seeds[i])
        self._reset_copies(idx)
        self._steps[idx] = 0
        self._prev_done[idx] = False
        self._has_reset = True
        return self._observe(), {}

    def _check_actions(self, actions):
        return actions

    def _check_discrete(self, actions, n: int) -> np.ndarray:
        """``actions`` as an int array of shape (num_envs,) with values in [0, n), else ValueError."""
        a = np.asarray(actions)
        if a.dtype != np.int64:
            a = a.astype(np.int64) if a.dtype.kind in "iu" else None
        if a is None or a.shape != (self.num_envs,) or np.count_nonzero(a.view(np.uint64) >= n):
            raise ValueError(f"actions must be an int array of shape ({self.num_envs},) with values in "
                             f"[0, {n}), got {actions!r}")
        return a

    def step(self, actions):
        if not self._has_reset:
            raise RuntimeError("Cannot call step() before reset()")
        actions = self._check_actions(actions)
        mode = self.autoreset_mode
        if mode == AutoresetMode.NEXT_STEP:
            prev = self._prev_done
            ridx = prev.nonzero()[0] if np.count_nonzero(prev) else None
            rewards, terminated = self._step_copies(actions, None if ridx is None else ~prev)
            self._steps += 1
            if ridx is not None:
                self._reset_copies(ridx)
                rewards[ridx] = 0.0
                terminated[ridx] = False
                self._steps[ridx] = 0
            truncated = self._truncations()
            self._prev_done = terminated | truncated
            return self._observe(), rewards, terminated, truncated, {}
        if mode == AutoresetMode.DISABLED:
            if np.count_nonzero(self._prev_done):
                raise RuntimeError("autoreset_mode=DISABLED: reset the finished copies (options="
                                   "{'reset_mask': mask}) before stepping them again")
            rewards, terminated = self._step_copies(actions, None)
            self._steps += 1
            truncated = self._truncations()
            self._prev_done = terminated | truncated
            return self._observe(), rewards, terminated, truncated, {}
        # SAME_STEP
        rewards, terminated = self._step_copies(actions, None)
        self._steps += 1
        truncated = self._truncations()
        done = terminated | truncated
        obs = self._observe()
        infos: dict[str, Any] = {}
        if np.count_nonzero(done):
            idx = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in idx:
                final_obs[i] = obs[i].copy()
            infos = {"final_obs": final_obs, "_final_obs": done.copy(),
                     "final_info": {}, "_final_info": done.copy()}
            self._reset_copies(idx)
            self._steps[idx] = 0
            obs = self._observe()
        self._prev_done[:] = False
        return obs, rewards, terminated, truncated, infos

    def _truncations(self) -> np.ndarray:
        if self.max_episode_steps is None:
            return np.zeros(self.num_envs, dtype=np.bool_)
        return self._steps >= self.max_episode_steps

    # ------------------------------------------------------------------ rendering
    def _make_renderer(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_renderer(self, i: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self):
        """``rgb_array``: a tuple with one frame per copy (like SyncVectorEnv); ``human``: copy 0."""
        if self.render_mode is None:
            return None
        if not self._has_reset:
            raise RuntimeError("Cannot call render() before reset()")
        if self._renderer_env is None:
            self._renderer_env = self._make_renderer()
        if self.render_mode == "human":
            self._load_renderer(0)
            self._renderer_env.render()
            return None
        frames = []
        for i in range(self.num_envs):
            self._load_renderer(i)
            frames.append(self._renderer_env.render())
        return tuple(frames)

    def close_extras(self, **kwargs):
        if getattr(self, "_renderer_env", None) is not None:
            self._renderer_env.close()
            self._renderer_env = None
