"""Native numpy vector versions of Gymnasium's classic-control envs.

- ``Acrobot-v1``: :class:`AcrobotVectorEnv` (TimeLimit 500)
- ``MountainCar-v0``: :class:`MountainCarVectorEnv` (TimeLimit 200)
- ``MountainCarContinuous-v0``: :class:`MountainCarContinuousVectorEnv` (TimeLimit 999)
- ``Pendulum-v1``: :class:`PendulumVectorEnv` (TimeLimit 200)

(Gymnasium ships a native vector env for CartPole only.) All copies step at once as numpy
arrays (Acrobot's RK4 step included); seeding, TimeLimit truncation and autoreset (NEXT_STEP by
default) come from :class:`envs._vector.NativeVectorEnv`, so for the same seeds and actions the
outputs equal those of ``SyncVectorEnv`` over ``gym.make(id)`` bit for bit: observations, rewards,
terminations, truncations, dtypes. :func:`make_vector` builds one from a registered id the way
``gym.make`` would (the spec's kwargs and ``max_episode_steps``); ``rlkit.environments.make_vec_env``
uses it for these ids (``RLKIT_NATIVE_VECTOR=0`` turns that off, docs/envs.md).

Bit-equality needs care in three places, because the single envs compute on numpy scalars:

* ``x ** 2`` of a numpy scalar calls libm's ``pow(x, 2)`` (``powf`` for float32), which is not
  always the correctly rounded ``x * x`` that ``x ** 2`` on an array gives (about 1 in 1,000
  differ by one ulp; Acrobot is chaotic, so one ulp grows into a different trajectory).
  :func:`libm_square` / :func:`libm_square_f32` compute ``x * x`` with its exact rounding error
  and call the scalar ``pow`` only for the few elements whose square lies so close to a rounding
  midpoint that libm's documented error bound (glibc: 0.52 ulp for pow, 2**-28.6 relative for
  powf here) leaves the rounding open; every other element's libm result must be ``x * x``.
* Float32 state and actions: Acrobot's state is float32 right after a reset (its first
  observation takes float32 sines); MountainCarContinuous keeps float32 state after its first step
  and mixes it with Python floats, which numpy (NEP 50) rounds to float32 first. The vector envs
  track which copies are in which precision and round where the single env does.
* ``math.cos`` (MountainCar) equals numpy's float64 ``np.cos``: numpy 2 calls libm for float64
  sin/cos (the tests check the equality on this machine's numpy and libm).

State is plain numpy arrays and per-copy Generators, so ``rlkit.environments.env_state`` /
``load_env_state`` snapshot and restore a vector env exactly (docs/architecture.md §3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control import utils as cc_utils
from gymnasium.envs.classic_control.acrobot import AcrobotEnv
from gymnasium.envs.classic_control.continuous_mountain_car import Continuous_MountainCarEnv
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv
from gymnasium.envs.classic_control.pendulum import DEFAULT_X, DEFAULT_Y, PendulumEnv
from gymnasium.vector.utils import batch_space

from envs._vector import NativeVectorEnv, check_int, check_render_mode

__all__ = ["AcrobotVectorEnv", "MountainCarVectorEnv", "MountainCarContinuousVectorEnv",
           "PendulumVectorEnv", "VECTOR_CLASSES", "libm_square", "libm_square_f32", "make_vector"]

# --------------------------------------------------------------------------- libm squares
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's split of a double into two 26-bit halves
# An element is recomputed with libm when its exact square lies within this many ulps of a
# rounding midpoint. glibc's pow is within 0.52 ulp (exp part 0.509 / 0.511 without FMA, log part
# below 0.002 ulp for squares in [2**-200, 2**200]); measured worst case 0.007. powf for |x| >= 2**-8
# and y = 2 is within 2**-28.6 relative before its final rounding (glibc's e_powf.c: relerr_log2
# 1.83 * 2**-33 times |y log2 x| <= 16 times ln 2, plus relerr_exp2 1.69 * 2**-34), i.e. 0.041 ulp;
# measured worst case 0.0016. The margins below are about twice the bounds.
_F64_MARGIN = 0.03
_F32_MARGIN = 0.08
# bit patterns of positive doubles / floats are ordered like their values: a range check is one
# unsigned subtraction and comparison (inf and nan fall outside)
_F64_LO = int(np.float64(2.0**-200).view(np.uint64))
_F64_SPAN = int(np.float64(2.0**200).view(np.uint64)) - _F64_LO
_F32_LO = int(np.float32(2.0**-8).view(np.uint32))
_F32_SPAN = int(np.float32(2.0**60).view(np.uint32)) - _F32_LO


def libm_square(x: np.ndarray) -> np.ndarray:
    """``x ** 2`` of a float64 array, element by element equal to ``np.float64(v) ** 2``
    (libm's ``pow(v, 2)``, which is what the single envs compute), in a new array."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    sq = x * x
    c = x * _SPLIT
    xh = c - (c - x)
    xl = x - xh
    err = np.abs(((xh * xh - sq) + 2.0 * xh * xl) + xl * xl)  # |x*x - sq|, exactly (Dekker)
    bits = sq.view(np.uint64)
    two_e = (bits & np.uint64(0x7FF0000000000000)).view(np.float64)  # 2**exponent: ulp = two_e * 2**-52
    hard = err > two_e * ((0.5 - _F64_MARGIN) * 2.0**-52)  # err <= ulp / 2 always
    hard |= (bits << 12) == 0  # a power of two (or 0): the ulp below is half the ulp above
    hard |= (bits - _F64_LO) > _F64_SPAN  # outside [2**-200, 2**200), inf, nan
    flat = hard.reshape(-1)
    if flat.any():
        idx = np.flatnonzero(flat)
        sub = x.reshape(-1)[idx]
        keep = ~(np.abs(sub) > 1.3e154)  # Python's float ** raises where the square overflows
        out = sq.reshape(-1)
        out[idx[keep]] = np.power(sub[keep].astype(object), 2).astype(np.float64)  # C pow, as numpy's scalar **
    return sq


def libm_square_f32(u: np.ndarray) -> np.ndarray:
    """``u ** 2`` of a float32 array, element by element equal to ``np.float32(v) ** 2``
    (libm's ``powf(v, 2)``), in a new float32 array."""
    u = np.ascontiguousarray(u, dtype=np.float32)
    e = u.astype(np.float64)
    e *= e  # exact: 48 significant bits at most
    r = e.astype(np.float32)  # the correctly rounded square, u * u
    rbits = r.view(np.uint32)
    two_e = (rbits & np.uint32(0x7F800000)).view(np.float32).astype(np.float64)  # ulp = two_e * 2**-23
    hard = np.abs(e - r) > two_e * ((0.5 - _F32_MARGIN) * 2.0**-23)
    hard |= (rbits << 9) == 0  # a power of two (or 0)
    hard |= ((u.view(np.uint32) & np.uint32(0x7FFFFFFF)) - _F32_LO) > _F32_SPAN  # |u| outside [2**-8, 2**60)
    flat = hard.reshape(-1)
    if flat.any():
        idx = np.flatnonzero(flat)
        out = r.reshape(-1)
        scalars = np.empty(idx.size, dtype=object)
        scalars[:] = list(u.reshape(-1)[idx])  # np.float32 objects: their ** is powf
        out[idx] = np.power(scalars, 2).astype(np.float32)
    return r


def _float_actions(actions, n: int) -> np.ndarray:
    """Box actions of shape (n, 1) as the single env receives them: float32 and float64 keep their
    dtype (the single envs compute in it), any other real dtype becomes float64."""
    a = np.asarray(actions)
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            a = None
        else:
            a = a.astype(np.float64)
    if a is None or a.shape != (n, 1):
        raise ValueError(f"actions must be a real array of shape ({n}, 1), got {actions!r}")
    return a


class _ClassicVectorEnv(NativeVectorEnv):
    """Shared set-up: spaces, reset options (the single env's ``options``, applied to every copy
    the call resets, as SyncVectorEnv passes them to each env) and rendering through one single env."""

    _single: ClassVar[type]

    def _init_classic(self, num_envs, max_episode_steps, render_mode, autoreset_mode,
                      obs_space: spaces.Box, act_space: spaces.Space) -> None:
        check_render_mode(render_mode, self.metadata["render_modes"])
        self._init_vector(num_envs, max_episode_steps, autoreset_mode, render_mode)
        n = self.num_envs
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = batch_space(obs_space, n)
        self.action_space = batch_space(act_space, n)
        self._options = None

    def reset(self, *, seed=None, options=None):
        self._options = None if options is None else {k: v for k, v in options.items() if k != "reset_mask"}
        try:
            return super().reset(seed=seed, options=options)
        finally:
            self._options = None

    def _make_renderer(self):
        return self._single(render_mode=self.render_mode, **self._single_kwargs())

    def _single_kwargs(self) -> dict:
        return {}


# --------------------------------------------------------------------------- Acrobot
class AcrobotVectorEnv(_ClassicVectorEnv):
    """``Acrobot-v1`` ("book" dynamics, no torque noise, as registered), ``num_envs`` copies.

    State: ``(4, n)`` float64 (theta1, theta2, dtheta1, dtheta2); ``_fresh`` marks copies just
    reset, whose single env still holds its float32 start state (so its first observation's
    sines and cosines are float32 ones). One step: the single env's RK4 step over ``dt = 0.2`` on
    all copies at once, each derivative written as the single env writes it (same operations in
    the same order), the squares through :func:`libm_square`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 15}
    _single = AcrobotEnv

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 500, render_mode: str | None = None,
                 autoreset_mode="NextStep"):
        e = AcrobotEnv
        if e.book_or_nips != "book" or e.torque_noise_max != 0.0:  # pragma: no cover - gymnasium's defaults
            raise NotImplementedError("AcrobotVectorEnv implements the book dynamics without torque noise")
        high = np.array([1.0, 1.0, 1.0, 1.0, e.MAX_VEL_1, e.MAX_VEL_2], dtype=np.float32)
        self._init_classic(num_envs, max_episode_steps, render_mode, autoreset_mode,
                           spaces.Box(low=-high, high=high, dtype=np.float32), spaces.Discrete(3))
        self._torques = np.array(e.AVAIL_TORQUE, dtype=np.float64)
        self._max_vel = np.array([[e.MAX_VEL_1], [e.MAX_VEL_2]])
        self._s = np.zeros((4, self.num_envs))
        self._fresh = np.zeros(self.num_envs, dtype=np.bool_)

    def _check_actions(self, actions):
        return self._check_discrete(actions, 3)

    def _reset_copies(self, idx):
        low, high = cc_utils.maybe_parse_reset_bounds(self._options, -0.1, 0.1)
        u = self._streams.take(idx, 4)
        self._s[:, idx] = (low + (high - low) * u).astype(np.float32).T
        self._fresh[idx] = True

    def _derivs(self, y: np.ndarray, a: np.ndarray) -> np.ndarray:
        e = AcrobotEnv
        m1, m2 = e.LINK_MASS_1, e.LINK_MASS_2
        l1 = e.LINK_LENGTH_1
        lc1, lc2 = e.LINK_COM_POS_1, e.LINK_COM_POS_2
        I1 = I2 = e.LINK_MOI
        g = 9.8
        pi = np.pi
        theta1, theta2, dtheta1, dtheta2 = y
        cos2, sin2 = np.cos(theta2), np.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + I2
        dtheta1_sq, dtheta2_sq, d2_sq = libm_square(np.stack((dtheta1, dtheta2, d2)))
        phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2_sq * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1_sq * sin2 - phi2) / (
            m2 * lc2**2 + I2 - d2_sq / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return np.stack((dtheta1, dtheta2, ddtheta1, ddtheta2))

    def _step_copies(self, actions, active):
        a = self._torques[actions]
        # gymnasium's rk4(derivs, s, [0, dt]): one RK4 step
        dt = AcrobotEnv.dt - 0
        dt2 = dt / 2.0
        y0 = self._s
        k1 = self._derivs(y0, a)
        k2 = self._derivs(y0 + dt2 * k1, a)
        k3 = self._derivs(y0 + dt2 * k2, a)
        k4 = self._derivs(y0 + dt * k3, a)
        ns = y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        pi = np.pi
        diff = pi - (-pi)  # wrap(x, -pi, pi) of both angles
        while (over := ns[:2] > pi).any():
            ns[:2] = np.where(over, ns[:2] - diff, ns[:2])
        while (under := ns[:2] < -pi).any():
            ns[:2] = np.where(under, ns[:2] + diff, ns[:2])
        ns[2:] = np.minimum(np.maximum(ns[2:], -self._max_vel), self._max_vel)  # bound(x, -v, v)
        self._s = ns
        self._fresh[:] = False
        terminated = -np.cos(ns[0]) - np.cos(ns[1] + ns[0]) > 1.0
        return np.where(terminated, 0.0, -1.0), terminated

    def _observe(self):
        s = self._s
        obs = np.stack((np.cos(s[0]), np.sin(s[0]), np.cos(s[1]), np.sin(s[1]), s[2], s[3]),
                       axis=1, dtype=np.float32)
        if self._fresh.any():  # float32 start states: float32 sines and cosines
            idx = np.flatnonzero(self._fresh)
            f = s[:, idx].astype(np.float32)
            obs[idx] = np.stack((np.cos(f[0]), np.sin(f[0]), np.cos(f[1]), np.sin(f[1]), f[2], f[3]), axis=1)
        return obs

    def _load_renderer(self, i):
        state = self._s[:, i].copy()
        self._renderer_env.state = state.astype(np.float32) if self._fresh[i] else state


# --------------------------------------------------------------------------- MountainCar
class MountainCarVectorEnv(_ClassicVectorEnv):
    """``MountainCar-v0``, ``num_envs`` copies. State: float64 position and velocity (the single
    env's state is float64 throughout); ``goal_velocity`` as the single env's."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 30}
    _single = MountainCarEnv
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.5
    force = 0.001
    gravity = 0.0025

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 200, render_mode: str | None = None,
                 goal_velocity=0, autoreset_mode="NextStep"):
        self.goal_velocity = goal_velocity
        low = np.array([self.min_position, -self.max_speed], dtype=np.float32)
        high = np.array([self.max_position, self.max_speed], dtype=np.float32)
        self._init_classic(num_envs, max_episode_steps, render_mode, autoreset_mode,
                           spaces.Box(low, high, dtype=np.float32), spaces.Discrete(3))
        self._pos = np.zeros(self.num_envs)
        self._vel = np.zeros(self.num_envs)

    def _single_kwargs(self):
        return {"goal_velocity": self.goal_velocity}

    def _check_actions(self, actions):
        return self._check_discrete(actions, 3)

    def _reset_copies(self, idx):
        low, high = cc_utils.maybe_parse_reset_bounds(self._options, -0.6, -0.4)
        self._pos[idx] = low + (high - low) * self._streams.take(idx, 1)[:, 0]
        self._vel[idx] = 0.0

    def _step_copies(self, actions, active):
        position = self._pos
        velocity = self._vel + ((actions - 1) * self.force + np.cos(3 * position) * (-self.gravity))
        velocity = np.minimum(np.maximum(velocity, -self.max_speed), self.max_speed)
        position = position + velocity
        position = np.minimum(np.maximum(position, self.min_position), self.max_position)
        velocity[(position == self.min_position) & (velocity < 0)] = 0.0
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        self._pos, self._vel = position, velocity
        return np.full(self.num_envs, -1.0), terminated

    def _observe(self):
        return np.stack((self._pos, self._vel), axis=1, dtype=np.float32)

    def _load_renderer(self, i):
        self._renderer_env.state = np.array([self._pos[i], self._vel[i]])


# --------------------------------------------------------------------------- MountainCarContinuous
class MountainCarContinuousVectorEnv(_ClassicVectorEnv):
    """``MountainCarContinuous-v0``, ``num_envs`` copies.

    The single env's state is float64 after a reset and float32 after every step, and its
    arithmetic mixes float32 numpy scalars with Python floats (rounded to float32 first, NEP 50)
    and float64 ones. State here: float32 ``_pos`` / ``_vel``, plus ``_fresh`` (copies still in
    their float64 start state, position ``_pos0``, velocity 0). A step runs in float32 for every
    copy (the actions float32, as rlkit and ``action_space.sample()`` give them); copies just reset,
    or every copy when the actions are not float32, go through :meth:`_step_exact`, which follows
    the single env's precision value by value.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 30}
    _single = Continuous_MountainCarEnv
    min_action = -1.0
    max_action = 1.0
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45
    power = 0.0015

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 999, render_mode: str | None = None,
                 goal_velocity=0, autoreset_mode="NextStep"):
        if isinstance(goal_velocity, np.generic):
            goal_velocity = goal_velocity.item()
        self.goal_velocity = goal_velocity
        # After a clip the single env's velocity is the Python float +-0.07 (or 0), compared with
        # goal_velocity in float64; in float32 the result is the same unless goal_velocity sits
        # within float32 rounding of these values.
        self._gv_exact = all(bool(np.float32(v) >= goal_velocity) == (v >= goal_velocity)
                             for v in (self.max_speed, -self.max_speed))
        low = np.array([self.min_position, -self.max_speed], dtype=np.float32)
        high = np.array([self.max_position, self.max_speed], dtype=np.float32)
        self._init_classic(num_envs, max_episode_steps, render_mode, autoreset_mode,
                           spaces.Box(low=low, high=high, dtype=np.float32),
                           spaces.Box(low=self.min_action, high=self.max_action, shape=(1,), dtype=np.float32))
        n = self.num_envs
        self._pos = np.zeros(n, dtype=np.float32)
        self._vel = np.zeros(n, dtype=np.float32)
        self._pos0 = np.zeros(n)
        self._fresh = np.zeros(n, dtype=np.bool_)

    def _single_kwargs(self):
        return {"goal_velocity": self.goal_velocity}

    def _check_actions(self, actions):
        return _float_actions(actions, self.num_envs)

    def _reset_copies(self, idx):
        low, high = cc_utils.maybe_parse_reset_bounds(self._options, -0.6, -0.4)
        p0 = low + (high - low) * self._streams.take(idx, 1)[:, 0]
        self._pos0[idx] = p0
        self._pos[idx] = p0  # float32 copy for the observation
        self._vel[idx] = 0.0
        self._fresh[idx] = True

    def _step_copies(self, actions, active):
        a = actions[:, 0]
        fresh = self._fresh
        slow = np.flatnonzero(fresh) if a.dtype == np.float32 else self._all
        if slow.size < self.num_envs:
            pos, vel, terminated = self._step_f32(a, self._pos, self._vel)
        else:
            pos, vel = self._pos.copy(), self._vel.copy()
            terminated = np.zeros(self.num_envs, dtype=np.bool_)
        if slow.size:
            p, v, t = self._step_exact(a[slow], self._pos[slow], self._vel[slow], fresh[slow], self._pos0[slow])
            pos[slow], vel[slow], terminated[slow] = p, v, t
        a64 = a.astype(np.float64)
        sq = a64 * a64 if a.dtype == np.float32 else libm_square(a64)  # math.pow(a, 2)
        reward = np.where(terminated, 100.0, 0.0) - sq * 0.1
        self._pos, self._vel = pos, vel
        self._fresh = np.zeros(self.num_envs, dtype=np.bool_)
        return reward, terminated

    def _step_f32(self, a, p, v):
        """Every copy float32, the actions float32: the single env's step as numpy computes it."""
        fp = a * self.power  # float32
        d = 0.0025 * np.cos((3 * p).astype(np.float64))  # math.cos of a float32: a Python float
        rhs = fp - d.astype(np.float32)
        lo, hi = a < self.min_action, a > self.max_action
        if lo.any() or hi.any():  # force clipped to the Python float +-1.0: the difference in float64
            fpy = np.where(hi, self.max_action * self.power, self.min_action * self.power)
            rhs = np.where(lo | hi, (fpy - d).astype(np.float32), rhs)
        v1 = v + rhs
        velocity = np.minimum(np.maximum(v1, -self.max_speed), self.max_speed)
        position = np.minimum(np.maximum(p + velocity, self.min_position), self.max_position)
        velocity[(position == self.min_position) & (velocity < 0)] = 0.0
        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        if not self._gv_exact:  # a clipped velocity is the Python float +-max_speed
            reached = position >= self.goal_position
            for c, clipped in ((self.max_speed, v1 > self.max_speed), (-self.max_speed, v1 < -self.max_speed)):
                terminated = np.where(clipped, reached & (c >= self.goal_velocity), terminated)
        return position, velocity, terminated

    def _step_exact(self, a, p32, v32, fresh, p0):
        """The single env's step with its precision tracked per value: each quantity is float32
        (``*32`` mask), float64, or a Python float (``*py``); an operation rounds to float32 when
        one operand is float32 and the other float32 or a Python float (NEP 50)."""
        f32 = np.float32
        a32 = a.dtype == np.float32
        a = a.astype(np.float64)
        s32 = ~fresh  # the state's precision
        p = np.where(fresh, p0, p32.astype(np.float64))
        v = np.where(fresh, 0.0, v32.astype(np.float64))

        def r32(x):
            return x.astype(f32).astype(np.float64)

        def thr(is32, c):  # the threshold c as compared with a value of that precision
            return np.where(is32, float(f32(c)), c)

        # force = min(max(a, -1.0), 1.0): the action, or the Python float bound
        lo, hi = a < self.min_action, a > self.max_action
        force_py = lo | hi
        force32 = ~force_py & a32
        force64 = ~force_py & ~a32
        force = np.where(hi, self.max_action, np.where(lo, self.min_action, a))
        fp = np.where(force32, r32(force * float(f32(self.power))), force * self.power)
        pos3 = np.where(s32, r32(3 * p), 3 * p)
        d = 0.0025 * np.cos(pos3)  # math.cos: a Python float
        rhs = np.where(force32, r32(fp - r32(d)), fp - d)  # tagged like the force
        # velocity += rhs: float32 unless the state or rhs is float64
        v1_32 = s32 & ~force64
        v1 = np.where(v1_32, r32(v + r32(rhs)), v + rhs)
        # clipped to the Python float +-max_speed
        vhi = v1 > thr(v1_32, self.max_speed)
        vlo = ~vhi & (v1 < thr(v1_32, -self.max_speed))
        v_py = vhi | vlo
        vel = np.where(vhi, self.max_speed, np.where(vlo, -self.max_speed, v1))
        vel32 = v1_32 & ~v_py
        # position += velocity: float32 when the state is and the velocity is float32 or Python
        p1_32 = s32 & (vel32 | v_py)
        p1 = np.where(p1_32, r32(p + r32(vel)), p + vel)
        phi = p1 > thr(p1_32, self.max_position)
        plo = ~phi & (p1 < thr(p1_32, self.min_position))
        pos = np.where(phi, self.max_position, np.where(plo, self.min_position, p1))
        pos32 = p1_32 & ~(phi | plo)
        at_min = (pos == thr(pos32, self.min_position)) & (vel < 0)
        vel = np.where(at_min, 0.0, vel)  # the Python int 0
        vel32 &= ~at_min
        gv = self.goal_velocity
        terminated = (pos >= thr(pos32, self.goal_position)) & np.where(vel32, vel.astype(f32) >= gv, vel >= gv)
        return pos.astype(f32), vel.astype(f32), terminated

    def _observe(self):
        return np.stack((self._pos, self._vel), axis=1)

    def _load_renderer(self, i):
        self._renderer_env.state = np.array([self._pos[i], self._vel[i]], dtype=np.float32)


# --------------------------------------------------------------------------- Pendulum
class PendulumVectorEnv(_ClassicVectorEnv):
    """``Pendulum-v1``, ``num_envs`` copies, gravity ``g`` as the single env's. State: float64
    angle and angular velocity; the torque keeps the actions' dtype (float32 from rlkit and
    ``action_space.sample()``), as in the single env; the cost's squares through
    :func:`libm_square` / :func:`libm_square_f32`."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 30}
    _single = PendulumEnv
    max_speed = 8
    max_torque = 2.0
    dt = 0.05
    m = 1.0
    l = 1.0  # noqa: E741  the single env's name

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 200, render_mode: str | None = None,
                 g=10.0, autoreset_mode="NextStep"):
        self.g = g
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        self._init_classic(num_envs, max_episode_steps, render_mode, autoreset_mode,
                           spaces.Box(low=-high, high=high, dtype=np.float32),
                           spaces.Box(low=-self.max_torque, high=self.max_torque, shape=(1,), dtype=np.float32))
        n = self.num_envs
        self._th = np.zeros(n)
        self._thdot = np.zeros(n)
        self._last_u = np.full(n, np.nan)  # for rendering; nan: none since the reset

    def _single_kwargs(self):
        return {"g": self.g}

    def _check_actions(self, actions):
        return _float_actions(actions, self.num_envs)

    def _reset_copies(self, idx):
        options = self._options
        if options is None:
            x, y = DEFAULT_X, DEFAULT_Y
        else:
            x = cc_utils.verify_number_and_cast(options.get("x_init") if "x_init" in options else DEFAULT_X)
            y = cc_utils.verify_number_and_cast(options.get("y_init") if "y_init" in options else DEFAULT_Y)
        u = self._streams.take(idx, 2)
        high = np.array([x, y])
        low = -high
        start = low + (high - low) * u  # Generator.uniform(low, high): low + (high - low) * u
        self._th[idx] = start[:, 0]
        self._thdot[idx] = start[:, 1]
        self._last_u[idx] = np.nan

    def _step_copies(self, actions, active):
        th, thdot = self._th, self._thdot
        g, m, l, dt = self.g, self.m, self.l, self.dt  # noqa: E741  the single env's names
        u = np.minimum(np.maximum(actions[:, 0], -self.max_torque), self.max_torque)
        self._last_u = u.astype(np.float64)
        an = ((th + np.pi) % (2 * np.pi)) - np.pi  # angle_normalize
        an_sq, thdot_sq = libm_square(np.stack((an, thdot)))
        u_sq = libm_square_f32(u) if u.dtype == np.float32 else libm_square(u)
        costs = an_sq + 0.1 * thdot_sq + 0.001 * u_sq
        newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
        newthdot = np.minimum(np.maximum(newthdot, -self.max_speed), self.max_speed)
        newth = th + newthdot * dt
        self._th, self._thdot = newth, newthdot
        return -costs, np.zeros(self.num_envs, dtype=np.bool_)

    def _observe(self):
        th = self._th
        return np.stack((np.cos(th), np.sin(th), self._thdot), axis=1, dtype=np.float32)

    def _load_renderer(self, i):
        r = self._renderer_env
        r.state = np.array([self._th[i], self._thdot[i]])
        r.last_u = None if np.isnan(self._last_u[i]) else self._last_u[i]


# --------------------------------------------------------------------------- construction
VECTOR_CLASSES: dict[str, type] = {
    "Acrobot-v1": AcrobotVectorEnv,
    "MountainCar-v0": MountainCarVectorEnv,
    "MountainCarContinuous-v0": MountainCarContinuousVectorEnv,
    "Pendulum-v1": PendulumVectorEnv,
}


def make_vector(env_id: str, num_envs: int, **kwargs) -> NativeVectorEnv:
    """The native vector env of a classic-control id, built as ``gym.make(env_id, **kwargs)``
    builds each copy: the spec's kwargs, then ``kwargs``; ``max_episode_steps`` (default: the
    spec's) is the per-copy TimeLimit; ``disable_env_checker`` is accepted and ignored."""
    spec = gym.spec(env_id)
    if spec.id not in VECTOR_CLASSES:
        raise ValueError(f"no native vector env for {env_id!r}; these ids have one: {sorted(VECTOR_CLASSES)}")
    kw = {**spec.kwargs, **kwargs}
    max_steps = kw.pop("max_episode_steps", None)
    kw.pop("disable_env_checker", None)
    if max_steps is None:
        max_steps = spec.max_episode_steps
    return VECTOR_CLASSES[spec.id](num_envs=check_int("num_envs", num_envs, 1), max_episode_steps=max_steps, **kw)
