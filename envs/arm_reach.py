"""ArmReach: a torque-limited 2-link planar arm tracking a target on a smooth random path."""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs._vector import NativeVectorEnv, check_float, check_render_mode

DEFAULT_MAX_EPISODE_STEPS = 500

# Arm: two uniform rods of length 1 m and mass 1 kg, joints on a horizontal plane (no gravity).
L1 = L2 = 1.0
M1 = M2 = 1.0
LC1, LC2 = L1 / 2, L2 / 2
I1, I2 = M1 * L1**2 / 12, M2 * L2**2 / 12
ALPHA = I1 + I2 + M1 * LC1**2 + M2 * (L1**2 + LC2**2)
BETA = M2 * L1 * LC2
DELTA = I2 + M2 * LC2**2
DT = 0.05  # seconds per env step
SUBSTEPS = 2  # semi-implicit Euler substeps per env step
MAX_SPEED = 8.0  # rad/s, joint speed clip
N_RESET_DRAWS = 16  # uniforms drawn at reset
OBS_DIM = 12


# --------------------------------------------------------------------------- batched kernels
# Every function works on float64 arrays whose first axis is the copy; the single env calls
# them with one copy, so single and vector envs do bit-identical arithmetic.
def init_from_uniforms(u: np.ndarray, target_speed: float):
    """Initial joint angles and target-path parameters from (n, 16) uniforms (the draw order)."""
    q1 = math.pi * (2.0 * u[:, 0] - 1.0)
    q2 = 2.6 * (2.0 * u[:, 1] - 1.0)
    path = np.empty((u.shape[0], 14))
    path[:, 0] = math.pi * (2.0 * u[:, 2] - 1.0)  # theta0
    path[:, 1] = target_speed * 0.25 * (2.0 * u[:, 3] - 1.0)  # Omega: slow rotation, rad/s
    path[:, 2:4] = 0.25 * u[:, 4:6]  # radius amplitudes a_k
    path[:, 4:6] = target_speed * (0.2 + 0.8 * u[:, 6:8])  # radius frequencies w_k
    path[:, 6:8] = 2.0 * math.pi * u[:, 8:10]  # radius phases
    path[:, 8:10] = 0.5 * u[:, 10:12]  # angle amplitudes b_k
    path[:, 10:12] = target_speed * (0.1 + 0.5 * u[:, 12:14])  # angle frequencies v_k
    path[:, 12:14] = 2.0 * math.pi * u[:, 14:16]  # angle phases
    return q1, q2, path


def target_at(path: np.ndarray, t: np.ndarray):
    """Target position and velocity at time t (seconds):
    r = 1.1 + sum a_k sin(w_k t + phi_k), theta = theta0 + Omega t + sum b_k sin(v_k t + psi_k)."""
    arg_r0 = path[:, 4] * t + path[:, 6]
    arg_r1 = path[:, 5] * t + path[:, 7]
    arg_t0 = path[:, 10] * t + path[:, 12]
    arg_t1 = path[:, 11] * t + path[:, 13]
    r = 1.1 + path[:, 2] * np.sin(arg_r0) + path[:, 3] * np.sin(arg_r1)
    dr = path[:, 2] * path[:, 4] * np.cos(arg_r0) + path[:, 3] * path[:, 5] * np.cos(arg_r1)
    th = path[:, 0] + path[:, 1] * t + path[:, 8] * np.sin(arg_t0) + path[:, 9] * np.sin(arg_t1)
    dth = path[:, 1] + path[:, 8] * path[:, 10] * np.cos(arg_t0) + path[:, 9] * path[:, 11] * np.cos(arg_t1)
    c, s = np.cos(th), np.sin(th)
    return r * c, r * s, dr * c - r * dth * s, dr * s + r * dth * c


def arm_step(q1, q2, dq1, dq2, tau1, tau2, damping: float):
    """SUBSTEPS semi-implicit Euler steps of the 2-link arm dynamics M(q) q'' + C(q, q') q' = tau - b q'."""
    h = DT / SUBSTEPS
    for _ in range(SUBSTEPS):
        c2 = np.cos(q2)
        hs = BETA * np.sin(q2)
        m11 = ALPHA + 2.0 * BETA * c2
        m12 = DELTA + BETA * c2
        rhs1 = tau1 + hs * (2.0 * dq1 * dq2 + dq2 * dq2) - damping * dq1
        rhs2 = tau2 - hs * dq1 * dq1 - damping * dq2
        det = m11 * DELTA - m12 * m12
        ddq1 = (DELTA * rhs1 - m12 * rhs2) / det
        ddq2 = (m11 * rhs2 - m12 * rhs1) / det
        dq1 = np.minimum(np.maximum(dq1 + h * ddq1, -MAX_SPEED), MAX_SPEED)
        dq2 = np.minimum(np.maximum(dq2 + h * ddq2, -MAX_SPEED), MAX_SPEED)
        q1 = np.remainder(q1 + h * dq1 + math.pi, 2.0 * math.pi) - math.pi
        q2 = np.remainder(q2 + h * dq2 + math.pi, 2.0 * math.pi) - math.pi
    return q1, q2, dq1, dq2


def observe(q1, q2, dq1, dq2, tx, ty, tvx, tvy):
    """(n, 12) float32 observations and the (n,) fingertip-to-target distances (float64)."""
    c1, s1 = np.cos(q1), np.sin(q1)
    q12 = q1 + q2
    fx = L1 * c1 + L2 * np.cos(q12)
    fy = L1 * s1 + L2 * np.sin(q12)
    dx, dy = fx - tx, fy - ty
    out = np.empty((q1.shape[0], OBS_DIM), dtype=np.float32)
    out[:, 0], out[:, 1] = c1, s1
    out[:, 2], out[:, 3] = np.cos(q2), np.sin(q2)
    out[:, 4], out[:, 5] = dq1 / MAX_SPEED, dq2 / MAX_SPEED
    out[:, 6], out[:, 7], out[:, 8], out[:, 9] = tx, ty, tvx, tvy
    out[:, 10], out[:, 11] = dx, dy
    return out, np.sqrt(dx * dx + dy * dy)


# --------------------------------------------------------------------------- reference controller
def pd_ik_controller(obs, max_torque: float = 4.0, damping: float = 0.2, kp: float = 30.0,
                     kd: float = 11.0) -> np.ndarray:
    """Hand-written controller: inverse kinematics + computed-torque PD with velocity feed-forward.

    Reads only the observation (one obs or a batch). Solves the IK of the target keeping the
    current elbow side, maps the target velocity to joint velocities through the inverse
    Jacobian, and outputs ``clip((M(q) (kp e + kd de) + C(q, q') q' + b q') / max_torque, -1, 1)``.
    """
    obs = np.asarray(obs, dtype=np.float64)
    single = obs.ndim == 1
    o = obs[None] if single else obs
    q1 = np.arctan2(o[:, 1], o[:, 0])
    q2 = np.arctan2(o[:, 3], o[:, 2])
    dq1, dq2 = o[:, 4] * MAX_SPEED, o[:, 5] * MAX_SPEED
    tx, ty, tvx, tvy = o[:, 6], o[:, 7], o[:, 8], o[:, 9]
    c2d = np.clip((tx * tx + ty * ty - L1**2 - L2**2) / (2 * L1 * L2), -1.0, 1.0)
    q2d = np.where(q2 >= 0, 1.0, -1.0) * np.arccos(c2d)
    q1d = np.arctan2(ty, tx) - np.arctan2(L2 * np.sin(q2d), L1 + L2 * np.cos(q2d))
    s1, c1 = np.sin(q1d), np.cos(q1d)
    s12, c12 = np.sin(q1d + q2d), np.cos(q1d + q2d)
    j11, j12 = -L1 * s1 - L2 * s12, -L2 * s12
    j21, j22 = L1 * c1 + L2 * c12, L2 * c12
    det = j11 * j22 - j12 * j21
    det = np.where(np.abs(det) < 1e-6, 1e-6, det)
    dq1d = (j22 * tvx - j12 * tvy) / det
    dq2d = (-j21 * tvx + j11 * tvy) / det
    e1 = np.remainder(q1d - q1 + np.pi, 2 * np.pi) - np.pi
    e2 = np.remainder(q2d - q2 + np.pi, 2 * np.pi) - np.pi
    acc1 = kp * e1 + kd * (dq1d - dq1)
    acc2 = kp * e2 + kd * (dq2d - dq2)
    c2, hs = np.cos(q2), BETA * np.sin(q2)
    m11, m12 = ALPHA + 2 * BETA * c2, DELTA + BETA * c2
    tau1 = m11 * acc1 + m12 * acc2 - hs * (2 * dq1 * dq2 + dq2 * dq2) + damping * dq1
    tau2 = m12 * acc1 + DELTA * acc2 + hs * dq1 * dq1 + damping * dq2
    act = np.clip(np.stack([tau1, tau2], axis=-1) / max_torque, -1.0, 1.0).astype(np.float32)
    return act[0] if single else act


@functools.lru_cache(maxsize=32)
def controller_rate(max_torque: float, effort_cost: float, damping: float, target_speed: float,
                    horizon: int, episodes: int = 32, seed: int = 0) -> float:
    """Average reward per step of :func:`pd_ik_controller` over ``episodes`` episodes of
    ``horizon`` steps from reset, copy i seeded with ``seed + i`` (deterministic)."""
    env = ArmReachVectorEnv(num_envs=episodes, max_episode_steps=None, max_torque=max_torque,
                            effort_cost=effort_cost, damping=damping, target_speed=target_speed)
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(horizon):
        obs, reward, _, _, _ = env.step(pd_ik_controller(obs, max_torque, damping))
        total += float(reward.sum())
    return total / (episodes * horizon)


# --------------------------------------------------------------------------- envs
class _ArmParams:
    def _setup(self, max_torque, effort_cost, damping, target_speed, render_mode):
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.max_torque = check_float("max_torque", max_torque, 0.0, low_open=True)
        self.effort_cost = check_float("effort_cost", effort_cost, 0.0)
        self.damping = check_float("damping", damping, 0.0)
        self.target_speed = check_float("target_speed", target_speed, 0.0, 3.0)
        vmax = 2.0 * max(self.target_speed, 1.0)
        high = np.array([1, 1, 1, 1, 1, 1, 2, 2, vmax, vmax, 4, 4], dtype=np.float32)
        self._obs_space = spaces.Box(-high, high, dtype=np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def _kwargs(self):
        return {"max_torque": self.max_torque, "effort_cost": self.effort_cost, "damping": self.damping,
                    "target_speed": self.target_speed}

    def _advance(self, action2d: np.ndarray):
        """One step of every copy held in self._q1.. for clipped (n, 2) float64 actions."""
        a = np.minimum(np.maximum(action2d, -1.0), 1.0)
        self._q1, self._q2, self._dq1, self._dq2 = arm_step(
            self._q1, self._q2, self._dq1, self._dq2, self.max_torque * a[:, 0], self.max_torque * a[:, 1],
            self.damping)
        self._k = self._k + 1
        obs, dist = self._compute_obs()
        reward = -dist - self.effort_cost * (a[:, 0] * a[:, 0] + a[:, 1] * a[:, 1])
        return obs, reward

    def _compute_obs(self):
        tx, ty, tvx, tvy = target_at(self._path, self._k * DT)
        return observe(self._q1, self._q2, self._dq1, self._dq2, tx, ty, tvx, tvy)


class ArmReachEnv(_ArmParams, gym.Env):
    """A torque-limited two-link planar arm whose fingertip tracks a moving target, forever.

    ## Description
    Two uniform rods (1 m, 1 kg each) joined by motors on a horizontal plane, viscous joint
    damping ``damping`` (0.2 N m s), joint speeds clipped to 8 rad/s, 20 Hz control
    (``dt = 0.05`` s, two semi-implicit Euler substeps). The target moves along a smooth random
    path, drawn at reset, that stays inside the reachable annulus: in polar coordinates
    ``r(t) = 1.1 + sum_k a_k sin(w_k t + phi_k)`` (0.6 to 1.6 m) and ``theta(t) = theta0 +
    Omega t + sum_k b_k sin(v_k t + psi_k)`` (two terms each; ``target_speed`` scales all the
    frequencies; 0 gives a still target). The target speed stays below 2 m/s.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: joint torques as fractions of ``max_torque`` (4 N m);
    actions outside [-1, 1] are clipped.

    ## Observation Space
    ``Box(12,) float32``: cos q1, sin q1, cos q2, sin q2, q1' / 8, q2' / 8 (rad/s), target x, y
    (m), target velocity x, y (m/s), fingertip minus target x, y (m).

    ## Rewards
    ``-|fingertip - target| - effort_cost * |action|^2`` per step (``effort_cost`` = 0.1), so
    between about -3.8 and 0.

    ## Starting State
    q1 uniform in [-pi, pi), q2 uniform in [-2.6, 2.6], zero joint speeds; new target path.

    ## Episode End
    A continuing task: it never terminates. The registration's TimeLimit
    (``max_episode_steps=500``, 25 s) truncates it; judge agents by the reward per step.

    ## Reference
    ``reference()``: the average reward per step of :func:`pd_ik_controller` (inverse
    kinematics + computed-torque PD with velocity feed-forward, reading only the
    observation), over 32 episodes of ``horizon`` steps (the registered 500 unless passed)
    from ``reset(seed=0)`` of a 32-copy vector env (copy i seeded with i). Default parameters:
    -0.0589 per step (doing nothing: about -1.67). Cached per parameterisation.

    ## Randomness
    16 ``self.np_random.random()`` doubles at reset (drawn with ``random(16)``: initial angles
    then path parameters), none per step.

    ## Arguments
    ``max_torque=4.0``, ``effort_cost=0.1``, ``damping=0.2``, ``target_speed=1.0``,
    ``render_mode=None``.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 20, "task": "continuing",
    }

    def __init__(self, max_torque: float = 4.0, effort_cost: float = 0.1, damping: float = 0.2,
                 target_speed: float = 1.0, render_mode: str | None = None):
        self._setup(max_torque, effort_cost, damping, target_speed, render_mode)
        self.render_mode = render_mode
        self.observation_space = self._obs_space
        self.action_space = self._act_space
        self._path = None
        self._canvas = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        u = self.np_random.random(N_RESET_DRAWS)[None, :]
        self._q1, self._q2, self._path = init_from_uniforms(u, self.target_speed)
        self._dq1 = np.zeros(1)
        self._dq2 = np.zeros(1)
        self._k = np.zeros(1, dtype=np.int64)
        obs, _ = self._compute_obs()
        if self.render_mode == "human":
            self.render()
        return obs[0], {}

    def step(self, action):
        if self._path is None:
            raise RuntimeError("Cannot call step() before reset()")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"action must have shape (2,), got {np.shape(action)}")
        obs, reward = self._advance(a[None, :])
        if self.render_mode == "human":
            self.render()
        return obs[0], float(reward[0]), False, False, {}

    def controller_action(self) -> np.ndarray:
        """The reference PD/IK controller's action for the current observation."""
        obs, _ = self._compute_obs()
        return pd_ik_controller(obs[0], self.max_torque, self.damping)

    def _horizon(self, horizon: int | None) -> int:
        if horizon is not None:
            return int(horizon)
        spec = gym.registry.get(self.spec.id) if self.spec is not None else None
        if spec is not None and spec.max_episode_steps is not None:
            return spec.max_episode_steps
        return DEFAULT_MAX_EPISODE_STEPS

    def reference(self, horizon: int | None = None) -> dict:
        """The PD/IK controller's average reward per step (see the class docstring)."""
        rate = controller_rate(self.max_torque, self.effort_cost, self.damping, self.target_speed,
                               self._horizon(horizon))
        return {"name": "PD/IK controller", "score": rate, "metric": "reward_per_step"}

    # -------------------------------------------------------------- rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' "
                            "or 'human' to gym.make")
            return None
        if self._canvas is None:
            from envs._render import Canvas

            self._canvas = Canvas(self.render_mode, 400, 400, self.metadata["render_fps"], "rlkit ArmReach")
        return self._canvas.frame(self._draw)

    def _draw(self, surf, pygame) -> None:
        size, scale = 400, 400 / 4.6
        cx = cy = size // 2

        def px(x, y):
            return (round(cx + x * scale), round(cy - y * scale))

        surf.fill((248, 248, 246))
        pygame.draw.circle(surf, (228, 232, 238), (cx, cy), int((L1 + L2) * scale))
        pygame.draw.circle(surf, (248, 248, 246), (cx, cy), int(abs(L1 - L2) * scale) + 1)
        if self._path is None:
            return
        # the target's path over the next 5 seconds
        ts = (self._k[0] + np.arange(0, 101)) * DT
        path = np.repeat(self._path, len(ts), axis=0)
        xs, ys, _, _ = target_at(path, ts)
        pygame.draw.lines(surf, (235, 150, 150), False, [px(x, y) for x, y in zip(xs, ys)], 3)
        tx, ty, _tvx, _tvy = (float(v[0]) for v in target_at(self._path, self._k * DT))
        q1, q2 = float(self._q1[0]), float(self._q2[0])
        elbow = (L1 * math.cos(q1), L1 * math.sin(q1))
        tip = (elbow[0] + L2 * math.cos(q1 + q2), elbow[1] + L2 * math.sin(q1 + q2))
        pygame.draw.circle(surf, (220, 50, 50), px(tx, ty), 9)
        pygame.draw.line(surf, (60, 70, 90), px(0, 0), px(*elbow), 10)
        pygame.draw.line(surf, (90, 110, 140), px(*elbow), px(*tip), 8)
        for p, r in ((px(0, 0), 9), (px(*elbow), 7)):
            pygame.draw.circle(surf, (30, 30, 30), p, r)
        pygame.draw.circle(surf, (30, 140, 230), px(*tip), 6)
        dist = math.hypot(tip[0] - tx, tip[1] - ty)
        self._canvas.text(surf, f"t = {self._k[0] * DT:5.2f} s   distance {dist:.3f} m", (10, 10), 22)

    def close(self):
        if self._canvas is not None:
            self._canvas.close()
            self._canvas = None


class ArmReachVectorEnv(_ArmParams, NativeVectorEnv):
    """Native numpy vector version of :class:`ArmReachEnv` (same batched kernels), step-for-step
    identical to ``SyncVectorEnv`` for the same seeds (TimeLimit truncation applied here)."""

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 20, "task": "continuing",
    }

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
                 max_torque: float = 4.0, effort_cost: float = 0.1, damping: float = 0.2,
                 target_speed: float = 1.0, render_mode: str | None = None, autoreset_mode="NextStep"):
        self._setup(max_torque, effort_cost, damping, target_speed, render_mode)
        self._init_vector(num_envs, max_episode_steps, autoreset_mode, render_mode)
        n = self.num_envs
        self.single_observation_space = self._obs_space
        self.single_action_space = self._act_space
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._q1, self._q2 = np.zeros(n), np.zeros(n)
        self._dq1, self._dq2 = np.zeros(n), np.zeros(n)
        self._k = np.zeros(n, dtype=np.int64)
        self._path = np.zeros((n, 14))
        self._obs_cache, self._dirty = None, []

    def _check_actions(self, actions):
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape ({self.num_envs}, 2), got {a.shape}")
        return a

    def _reset_copies(self, idx):
        u = self._streams.take(idx, N_RESET_DRAWS)
        self._q1[idx], self._q2[idx], self._path[idx] = init_from_uniforms(u, self.target_speed)
        self._dq1[idx] = 0.0
        self._dq2[idx] = 0.0
        self._k[idx] = 0
        self._dirty.append(idx)

    def reset(self, *, seed=None, options=None):
        self._obs_cache, self._dirty = None, []
        return super().reset(seed=seed, options=options)

    def _step_copies(self, actions, active):
        # the step's observations come with the rewards; _observe redoes only copies reset since
        self._obs_cache, reward = self._advance(actions)
        return reward, np.zeros(self.num_envs, dtype=np.bool_)

    def _observe(self):
        obs, dirty = self._obs_cache, self._dirty
        self._obs_cache, self._dirty = None, []
        if obs is None:
            return self._compute_obs()[0]
        for idx in dirty:
            tx, ty, tvx, tvy = target_at(self._path[idx], self._k[idx] * DT)
            obs[idx] = observe(self._q1[idx], self._q2[idx], self._dq1[idx], self._dq2[idx],
                               tx, ty, tvx, tvy)[0]
        return obs

    def controller_actions(self, obs) -> np.ndarray:
        return pd_ik_controller(obs, self.max_torque, self.damping)

    def _make_renderer(self):
        return ArmReachEnv(render_mode=self.render_mode, **self._kwargs())

    def _load_renderer(self, i):
        r = self._renderer_env
        r._q1, r._q2 = self._q1[i:i + 1].copy(), self._q2[i:i + 1].copy()
        r._dq1, r._dq2 = self._dq1[i:i + 1].copy(), self._dq2[i:i + 1].copy()
        r._path, r._k = self._path[i:i + 1].copy(), self._k[i:i + 1].copy()
