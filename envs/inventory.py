"""Inventory: a continuing lost-sales inventory problem with lead time; exact RVI optimum."""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from envs._vector import NativeVectorEnv, check_float, check_int, check_render_mode

DEFAULT_MAX_EPISODE_STEPS = 1000
_TAIL = 1e-12  # Poisson demand is truncated where P(D > d_max) < _TAIL; the tail mass goes to d_max


# --------------------------------------------------------------------------- model
@functools.lru_cache(maxsize=64)
def demand_table(demand_rate: float, season_period: int, season_amplitude: float,
                 demand_pmf: tuple[float, ...] | None) -> np.ndarray:
    """``cdf[k, d]`` = P(demand <= d) in season phase k; the last column is exactly 1.0.

    The env samples ``d = #{j : cdf[k, j] <= u}`` for a uniform ``u``, so the demand law of the
    simulator is exactly ``pmf[k, d] = cdf[k, d] - cdf[k, d - 1]``, which the solvers use.
    """
    if demand_pmf is not None:
        pmf = np.asarray(demand_pmf, dtype=np.float64)[None, :]
    else:
        rates = [demand_rate * (1.0 + season_amplitude * math.sin(2.0 * math.pi * k / season_period))
                 for k in range(season_period)]
        lam = max(rates)
        # smallest d_max with P(D > d_max) < _TAIL for the largest rate (log-space pmf: no underflow)
        j = np.arange(int(lam + 12.0 * math.sqrt(lam) + 30.0) + 1)
        log_fact = np.array([math.lgamma(x + 1.0) for x in j])
        tail = 1.0 - np.cumsum(np.exp(-lam + j * math.log(lam) - log_fact))
        d_max = int(np.argmax(tail < _TAIL)) if (tail < _TAIL).any() else len(j) - 1
        j, log_fact = j[:d_max + 1], log_fact[:d_max + 1]
        pmf = np.array([np.exp(-r + j * math.log(r) - log_fact) if r > 0 else (j == 0) * 1.0
                        for r in rates])
    cdf = np.cumsum(pmf, axis=1)
    cdf = np.minimum(cdf, 1.0)
    cdf[:, -1] = 1.0
    cdf.setflags(write=False)
    return cdf


class _Model:
    """Exact tables of one parameterisation, shared by the envs and the solvers."""

    def __init__(self, max_stock, max_order, lead_time, cdf, price, order_fixed_cost, order_unit_cost,
                 holding_cost, stockout_cost):
        self.S, self.O, self.L = max_stock, max_order + 1, lead_time
        self.cdf = cdf
        self.P, nd = cdf.shape
        self.pmf = np.diff(cdf, axis=1, prepend=0.0)
        y = np.arange(self.S + 1)[:, None]
        d = np.arange(nd)[None, :]
        sold = np.minimum(y, d)
        lost = d - sold
        stock = y - sold
        a = np.arange(self.O)
        order_cost = np.where(a > 0, order_fixed_cost, 0.0) + order_unit_cost * a
        # reward[y, d, a] for post-arrival stock y, demand d, order a (same float ops in every path)
        self.reward = (price * sold[:, :, None] - order_cost[None, None, :] - holding_cost * stock[:, :, None]
                       - stockout_cost * lost[:, :, None])
        self.next_stock = stock  # [y, d]
        self.n_pipe = self.O ** self.L
        self.n_states = self.P * (self.S + 1) * self.n_pipe

    def pipeline_index(self, pipe) -> np.ndarray:
        """Pipeline (oldest first) -> index, oldest order most significant."""
        idx = np.zeros(np.shape(pipe)[:-1], dtype=np.int64)
        for j in range(self.L):
            idx = idx * self.O + np.asarray(pipe)[..., j]
        return idx

    def transition_indices(self):
        """y[I, p, a] (post-arrival stock) and np[p, a] (next pipeline index)."""
        p = np.arange(self.n_pipe)
        a = np.arange(self.O)
        if self.L == 0:
            arrive = a[None, :] * np.ones((self.n_pipe, 1), dtype=np.int64)
            nxt = np.zeros((self.n_pipe, self.O), dtype=np.int64)
        else:
            arrive = np.repeat((p // self.O ** (self.L - 1))[:, None], self.O, axis=1)
            nxt = (p % self.O ** (self.L - 1))[:, None] * self.O + a[None, :]
        stock = np.arange(self.S + 1)[:, None, None]
        y = np.minimum(stock + arrive[None], self.S)
        return y, nxt

    def expectations(self):
        """r[k, y, a] = E reward and m[k, y, j] = P(next stock = j | y) in phase k."""
        r = np.einsum("kd,yda->kya", self.pmf, self.reward)
        m = np.zeros((self.P, self.S + 1, self.S + 1))
        for yv in range(self.S + 1):
            np.add.at(m[:, yv, :], (slice(None), self.next_stock[yv]), self.pmf)
        return r, m


MAX_SOLVER_STATES = 2_000_000


def _check_solvable(model: _Model) -> None:
    if model.n_states * model.O > MAX_SOLVER_STATES:
        raise ValueError(f"the exact solvers handle at most {MAX_SOLVER_STATES} state-action pairs; this "
                         f"parameterisation has {model.n_states} states x {model.O} actions "
                         f"(reduce max_stock, max_order, lead_time or season_period)")


def _model_from_key(key) -> _Model:
    (max_stock, max_order, lead_time, demand_rate, season_period, season_amplitude, demand_pmf,
     price, fixed, unit, holding, stockout) = key
    cdf = demand_table(demand_rate, season_period, season_amplitude, demand_pmf)
    return _Model(max_stock, max_order, lead_time, cdf, price, fixed, unit, holding, stockout)


def _bellman_setup(model: _Model):
    r, m = model.expectations()
    y, nxt = model.transition_indices()  # (S+1, Np, A), (Np, A)
    S1, Np, A, P = model.S + 1, model.n_pipe, model.O, model.P
    a = np.arange(A)
    r_sa = r[:, y, a]  # (P, S+1, Np, A)
    g_index = (y * Np + nxt[None, :, :])  # into G[k].reshape(S+1 * Np)
    next_phase = (np.arange(P) + 1) % P
    return r_sa, m, g_index, next_phase, (P, S1, Np, A)


@functools.lru_cache(maxsize=16)
def solve_rvi(key, tol: float = 1e-9, tau: float = 0.5, max_iter: int = 200_000):
    """Relative value iteration (with the aperiodicity transform ``tau``) on the exact model.

    Returns ``(gain, policy, h)``: the optimal long-run average reward per step, the optimal
    action of every state (flat index, see ``InventoryEnv.state_index``) and the bias.
    """
    model = _model_from_key(key)
    _check_solvable(model)
    r_sa, m, g_index, next_phase, (P, S1, Np, A) = _bellman_setup(model)
    h = np.zeros((P, S1, Np))
    lo = hi = 0.0
    for _ in range(max_iter):
        g = np.matmul(m, h[next_phase]).reshape(P, S1 * Np)  # E h(next) for (k, y, pipe')
        q = r_sa + np.take_along_axis(g, g_index.reshape(1, -1), axis=1).reshape(P, S1, Np, A)
        th = q.max(axis=3)
        diff = th - h
        lo, hi = float(diff.min()), float(diff.max())
        if hi - lo < tol:
            break
        h = h + tau * diff
        h -= h[0, 0, 0]
    else:  # pragma: no cover
        raise RuntimeError(f"relative value iteration did not converge (span {hi - lo:.3g})")
    policy = q.argmax(axis=3).reshape(-1)
    policy.setflags(write=False)
    return 0.5 * (lo + hi), policy, h


@functools.lru_cache(maxsize=16)
def solve_ss(key, tol: float = 1e-9, tau: float = 0.5, max_iter: int = 200_000):
    """Exact long-run average reward of every (s, S) policy, and the best one.

    (s, S) on the inventory position ``ip`` = on-hand + pipeline: order ``min(S - ip,
    max_order)`` when ``ip <= s``, else nothing; 0 <= s < S <= max_stock + lead_time * max_order.
    Returns ``(rate, s, S, rates)`` with ``rates[s, S]`` (NaN where s >= S).
    """
    model = _model_from_key(key)
    _check_solvable(model)
    r_sa, m, g_index, next_phase, (P, S1, Np, A) = _bellman_setup(model)
    pipe_digits = np.zeros((Np, max(model.L, 1)), dtype=np.int64)
    for j in range(model.L):
        pipe_digits[:, j] = (np.arange(Np) // model.O ** (model.L - 1 - j)) % model.O
    ip = np.arange(S1)[:, None] + pipe_digits.sum(axis=1)[None, :]  # (S+1, Np)
    top = model.S + model.L * (model.O - 1)
    pairs = [(s, big) for big in range(1, top + 1) for s in range(big)]
    s_arr = np.array([p[0] for p in pairs])[:, None, None]
    b_arr = np.array([p[1] for p in pairs])[:, None, None]
    act = np.where(ip[None] <= s_arr, np.minimum(b_arr - ip[None], model.O - 1), 0)  # (n, S+1, Np)
    act = np.maximum(act, 0)
    n = len(pairs)
    flat = np.arange(S1 * Np).reshape(S1, Np)
    sel = (flat[None] * A + act).reshape(n, -1)  # index into (S+1*Np*A)
    r_pol = np.take_along_axis(r_sa.reshape(P, 1, -1), sel[None], axis=2)  # (P, n, S1*Np)
    gi = g_index.reshape(-1)[sel]  # (n, S1*Np)
    h = np.zeros((n, P, S1, Np))
    active = np.ones(n, dtype=bool)
    lo = np.zeros(n)
    hi = np.zeros(n)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        ha = h[idx]
        g = np.matmul(m[None], ha[:, next_phase]).reshape(len(idx), P, S1 * Np)
        th = np.transpose(r_pol[:, idx], (1, 0, 2)) + np.take_along_axis(g, gi[idx][:, None, :], axis=2)
        diff = th.reshape(len(idx), P, S1, Np) - ha
        lo[idx] = diff.reshape(len(idx), -1).min(axis=1)
        hi[idx] = diff.reshape(len(idx), -1).max(axis=1)
        ha = ha + tau * diff
        h[idx] = ha - ha[:, :1, :1, :1]
        active[idx] = hi[idx] - lo[idx] >= tol
        if not active.any():
            break
    else:  # pragma: no cover
        raise RuntimeError("(s, S) policy evaluation did not converge")
    gains = 0.5 * (lo + hi)
    rates = np.full((top + 1, top + 1), np.nan)
    for (s, big), gval in zip(pairs, gains):
        rates[s, big] = gval
    best = int(np.argmax(gains))
    return float(gains[best]), pairs[best][0], pairs[best][1], rates


# --------------------------------------------------------------------------- envs
class _InventoryParams:
    def _setup(self, max_stock, max_order, lead_time, demand_rate, season_period, season_amplitude,
               demand_pmf, price, order_fixed_cost, order_unit_cost, holding_cost, stockout_cost,
               initial_stock, render_mode):
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.max_stock = check_int("max_stock", max_stock, 1)
        self.max_order = check_int("max_order", max_order, 1)
        self.lead_time = check_int("lead_time", lead_time, 0, 8)
        self.season_period = check_int("season_period", season_period, 1, 1000)
        self.season_amplitude = check_float("season_amplitude", season_amplitude, 0.0, 1.0)
        if demand_pmf is not None:
            try:
                pmf = tuple(float(p) for p in demand_pmf)
            except (TypeError, ValueError):
                raise ValueError(f"demand_pmf must be a sequence of probabilities, "
                                 f"got {demand_pmf!r}") from None
            if (not pmf or any(not math.isfinite(p) or p < 0 or p > 1 for p in pmf)
                    or abs(sum(pmf) - 1.0) > 1e-9):
                raise ValueError(f"demand_pmf must be probabilities in [0, 1] summing to 1 "
                                 f"(P(demand = 0), P(demand = 1), ...), got {demand_pmf!r}")
            if self.season_period != 1:
                raise ValueError(f"demand_pmf is a fixed law: season_period must be 1 with it, "
                                 f"got {season_period}")
            self.demand_pmf = pmf
            self.demand_rate = float(sum(i * p for i, p in enumerate(pmf)))
        else:
            self.demand_pmf = None
            self.demand_rate = check_float("demand_rate", demand_rate, 0.0, 1000.0, low_open=True)
        self.price = check_float("price", price, 0.0)
        self.order_fixed_cost = check_float("order_fixed_cost", order_fixed_cost, 0.0)
        self.order_unit_cost = check_float("order_unit_cost", order_unit_cost, 0.0)
        self.holding_cost = check_float("holding_cost", holding_cost, 0.0)
        self.stockout_cost = check_float("stockout_cost", stockout_cost, 0.0)
        if initial_stock is None:
            initial_stock = self.max_stock // 2
        self.initial_stock = check_int("initial_stock", initial_stock, 0, self.max_stock)
        self._key = (self.max_stock, self.max_order, self.lead_time,
                     self.demand_rate if self.demand_pmf is None else 0.0, self.season_period,
                     self.season_amplitude, self.demand_pmf, self.price, self.order_fixed_cost,
                     self.order_unit_cost, self.holding_cost, self.stockout_cost)
        n_demand = len(self.demand_pmf) if self.demand_pmf is not None else None
        if n_demand is None:
            n_demand = demand_table(self.demand_rate, self.season_period, self.season_amplitude,
                                    None).shape[1]
        size = (self.max_stock + 1) * n_demand * (self.max_order + 1)
        if size > 20_000_000:
            raise ValueError(f"max_stock={self.max_stock}, max_order={self.max_order} and demand up to "
                             f"{n_demand - 1}: the reward table would have {size} entries; at most "
                             f"20,000,000 are accepted")
        self._model = _model_from_key(self._key)
        self._cdf = self._model.cdf
        self._cdf_lists = [list(map(float, row)) for row in self._cdf]
        self._reward_table = self._model.reward  # [y, d, a]
        self._next_stock = self._model.next_stock  # [y, d]
        dim = 1 + self.lead_time + (self.season_period if self.season_period > 1 else 0)
        self._obs_space = spaces.Box(0.0, 1.0, shape=(dim,), dtype=np.float32)
        self._n_actions = self.max_order + 1

    def _kwargs(self):
        return {"max_stock": self.max_stock, "max_order": self.max_order, "lead_time": self.lead_time,
                    "demand_rate": self.demand_rate, "season_period": self.season_period,
                    "season_amplitude": self.season_amplitude, "demand_pmf": self.demand_pmf,
                    "price": self.price, "order_fixed_cost": self.order_fixed_cost,
                    "order_unit_cost": self.order_unit_cost, "holding_cost": self.holding_cost,
                    "stockout_cost": self.stockout_cost, "initial_stock": self.initial_stock}

    # references, shared by both env classes
    def reference(self) -> dict:
        """The optimal long-run average reward per step (relative value iteration, cached)."""
        gain, _, _ = solve_rvi(self._key)
        return {"name": "relative value iteration optimum", "score": float(gain),
                "metric": "reward_per_step"}

    def optimal_policy(self) -> np.ndarray:
        """The RVI-optimal action of every state, indexed by ``state_index``."""
        return solve_rvi(self._key)[1]

    def best_ss_policy(self) -> dict:
        """The best (s, S) policy on the inventory position and its exact reward rate."""
        rate, s, big, _ = solve_ss(self._key)
        return {"name": "best (s, S) policy", "s": s, "S": big, "score": rate,
                "metric": "reward_per_step"}


class InventoryEnv(_InventoryParams, gym.Env):
    """A lost-sales inventory with order lead time, fixed + unit ordering costs and Poisson demand.

    ## Description
    Each step (a period): the agent orders ``a`` units, which arrive ``lead_time`` steps later
    (immediately when ``lead_time=0``); the oldest order in transit arrives and is added to the
    on-hand stock (capped at ``max_stock``: what does not fit is discarded); demand ``D`` is
    drawn (Poisson with mean ``demand_rate``, optionally seasonal: mean ``demand_rate * (1 +
    season_amplitude * sin(2 pi k / season_period))`` in phase ``k``; or any ``demand_pmf``);
    ``min(stock, D)`` units are sold and the rest of the demand is lost.

    ## Action Space
    ``Discrete(max_order + 1)``: the order quantity (default 0..5).

    ## Observation Space
    ``Box(0, 1, (1 + lead_time [+ season_period],), float32)``: on-hand stock / max_stock, the
    orders in transit (oldest first) / max_order, and a one-hot season phase when
    ``season_period > 1``. Default: 3 numbers.

    ## Rewards
    ``price * sold - (order_fixed_cost if a > 0) - order_unit_cost * a - holding_cost * stock
    left - stockout_cost * lost sales``; defaults 5, 2, 2, 0.2, 1.

    ## Starting State
    ``initial_stock`` (default ``max_stock // 2``) on hand, nothing in transit, phase 0.

    ## Episode End
    A continuing task: it never terminates. The registration's TimeLimit
    (``max_episode_steps=1000``) truncates it; judge agents by the reward per step.

    ## Reference
    ``reference()``: the optimal long-run average reward per step, by relative value iteration
    (aperiodicity transform, tolerance 1e-9) on the exact model (Poisson tail beyond
    P < 1e-12 lumped into the largest demand, which the simulator samples identically);
    default parameters: 6.4685 per step. ``best_ss_policy()``: the best (s, S) policy on the
    inventory position and its exact rate: (s, S) = (11, 16), equal to the optimum to 1e-9 with
    the default parameters, but below it in general (lost sales, lead time, seasons: with
    ``season_period=4, season_amplitude=0.5`` it is 6.376 against 6.481).
    ``optimal_policy()`` and ``state_index()`` give the optimal action of the current state.
    Both solvers are cached per parameterisation (a couple of seconds at most by default).

    ## Randomness
    One ``self.np_random.random()`` double per step (the demand, by inverse CDF); none at reset.

    ## Arguments
    ``max_stock=15``, ``max_order=5``, ``lead_time=2``, ``demand_rate=3.0``,
    ``season_period=1``, ``season_amplitude=0.0``, ``demand_pmf=None``, ``price=5.0``,
    ``order_fixed_cost=2.0``, ``order_unit_cost=2.0``, ``holding_cost=0.2``,
    ``stockout_cost=1.0``, ``initial_stock=None``, ``render_mode=None``.

    ## Version History
    * v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 4, "task": "continuing",
    }

    def __init__(self, max_stock: int = 15, max_order: int = 5, lead_time: int = 2,
                 demand_rate: float = 3.0, season_period: int = 1, season_amplitude: float = 0.0,
                 demand_pmf: Sequence[float] | None = None, price: float = 5.0,
                 order_fixed_cost: float = 2.0, order_unit_cost: float = 2.0, holding_cost: float = 0.2,
                 stockout_cost: float = 1.0, initial_stock: int | None = None,
                 render_mode: str | None = None):
        self._setup(max_stock, max_order, lead_time, demand_rate, season_period, season_amplitude,
                    demand_pmf, price, order_fixed_cost, order_unit_cost, holding_cost, stockout_cost,
                    initial_stock, render_mode)
        self.render_mode = render_mode
        self.observation_space = self._obs_space
        self.action_space = spaces.Discrete(self._n_actions)
        self.stock: int | None = None
        self.pipeline: list[int] = []
        self.phase = 0
        self.last: dict | None = None
        self._steps = 0
        self._total = 0.0
        self._canvas = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.stock = self.initial_stock
        self.pipeline = [0] * self.lead_time
        self.phase = 0
        self.last = None
        self._steps, self._total = 0, 0.0
        if self.render_mode == "human":
            self.render()
        return self._obs(), {}

    def step(self, action):
        if self.stock is None:
            raise RuntimeError("Cannot call step() before reset()")
        a = int(action)
        if not 0 <= a < self._n_actions:
            raise ValueError(f"action must be in [0, {self._n_actions}), got {action!r}")
        if self.lead_time:
            arrive = self.pipeline[0]
            self.pipeline = self.pipeline[1:] + [a]
        else:
            arrive = a
        y = min(self.stock + arrive, self.max_stock)
        u = self.np_random.random()
        d = bisect.bisect_right(self._cdf_lists[self.phase], u)
        reward = float(self._reward_table[y, d, a])
        self.stock = int(self._next_stock[y, d])
        self.last = {"order": a, "arrived": arrive, "demand": d, "sold": y - self.stock,
                     "reward": reward}
        self.phase = (self.phase + 1) % self.season_period
        self._steps += 1
        self._total += reward
        if self.render_mode == "human":
            self.render()
        return self._obs(), reward, False, False, {}

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self._obs_space.shape, dtype=np.float32)
        obs[0] = self.stock / self.max_stock
        for j, p in enumerate(self.pipeline):
            obs[1 + j] = p / self.max_order
        if self.season_period > 1:
            obs[1 + self.lead_time + self.phase] = 1.0
        return obs

    def state_index(self) -> int:
        """Flat index of the current state into ``optimal_policy()``."""
        pipe = 0
        for p in self.pipeline:
            pipe = pipe * (self.max_order + 1) + p
        return (self.phase * (self.max_stock + 1) + self.stock) * self._model.n_pipe + pipe

    def optimal_action(self) -> int:
        return int(self.optimal_policy()[self.state_index()])

    # -------------------------------------------------------------- rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' "
                            "or 'human' to gym.make")
            return None
        if self._canvas is None:
            from envs._render import Canvas

            self._canvas = Canvas(self.render_mode, 480, 320, self.metadata["render_fps"],
                                  "rlkit Inventory")
        return self._canvas.frame(self._draw)

    def _draw(self, surf, pygame) -> None:
        c = self._canvas
        surf.fill((250, 250, 248))
        base, top = 270, 50
        scale = (base - top) / max(self.max_stock, 1)
        # on-hand stock bar with its capacity outline
        cap = pygame.Rect(40, top, 90, base - top)
        pygame.draw.rect(surf, (225, 230, 238), cap)
        if self.stock is not None:
            h = round(self.stock * scale)
            pygame.draw.rect(surf, (40, 110, 200), pygame.Rect(40, base - h, 90, h))
            c.text(surf, str(self.stock), (78, base - h - 20), 20)
        pygame.draw.rect(surf, (60, 60, 60), cap, 2)
        c.text(surf, f"on hand {self.stock if self.stock is not None else '-'}/{self.max_stock}",
               (34, base + 10), 20)
        # orders in transit, oldest (arriving next) first
        c.text(surf, "in transit", (170, top - 22), 20)
        ow = 44
        for j, p in enumerate(self.pipeline):
            x = 170 + j * (ow + 12)
            slot = pygame.Rect(x, base - int(self.max_order * scale), ow, int(self.max_order * scale))
            pygame.draw.rect(surf, (238, 232, 222), slot)
            h = round(p * scale)
            pygame.draw.rect(surf, (235, 140, 40), pygame.Rect(x, base - h, ow, h))
            pygame.draw.rect(surf, (90, 90, 90), slot, 1)
            c.text(surf, str(p), (x + 16, base - h - 20), 20)
            c.text(surf, f"t+{j + 1}", (x + 8, base + 10), 20)
        x0 = 170 + max(len(self.pipeline), 1) * (ow + 12) + 16
        lines = [f"step {self._steps}"]
        if self.season_period > 1:
            lines.append(f"phase {self.phase}/{self.season_period}")
        if self.last is not None:
            lines += [f"ordered {self.last['order']}", f"arrived {self.last['arrived']}",
                      f"demand {self.last['demand']}", f"sold {self.last['sold']}",
                      f"lost {self.last['demand'] - self.last['sold']}",
                      f"reward {self.last['reward']:+.2f}"]
        if self._steps:
            lines.append(f"avg/step {self._total / self._steps:+.3f}")
        for i, line in enumerate(lines):
            c.text(surf, line, (x0, top + i * 22), 22)
        c.text(surf, "Inventory", (12, 10), 26, (30, 30, 30))

    def close(self):
        if self._canvas is not None:
            self._canvas.close()
            self._canvas = None


class InventoryVectorEnv(_InventoryParams, NativeVectorEnv):
    """Native numpy vector version of :class:`InventoryEnv`, step-for-step identical to
    ``SyncVectorEnv`` for the same seeds (TimeLimit truncation applied here)."""

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["human", "rgb_array"], "render_fps": 4, "task": "continuing",
    }

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
                 max_stock: int = 15, max_order: int = 5, lead_time: int = 2, demand_rate: float = 3.0,
                 season_period: int = 1, season_amplitude: float = 0.0,
                 demand_pmf: Sequence[float] | None = None, price: float = 5.0,
                 order_fixed_cost: float = 2.0, order_unit_cost: float = 2.0, holding_cost: float = 0.2,
                 stockout_cost: float = 1.0, initial_stock: int | None = None,
                 render_mode: str | None = None, autoreset_mode="NextStep"):
        self._setup(max_stock, max_order, lead_time, demand_rate, season_period, season_amplitude,
                    demand_pmf, price, order_fixed_cost, order_unit_cost, holding_cost, stockout_cost,
                    initial_stock, render_mode)
        self._init_vector(num_envs, max_episode_steps, autoreset_mode, render_mode)
        n = self.num_envs
        self.single_observation_space = self._obs_space
        self.single_action_space = spaces.Discrete(self._n_actions)
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.stock = np.full(n, self.initial_stock, dtype=np.int64)
        self.pipeline = np.zeros((n, self.lead_time), dtype=np.int64)
        self.phase = np.zeros(n, dtype=np.int64)
        nd = self._cdf.shape[1]
        self._nd = nd
        self._cdf0 = np.ascontiguousarray(self._cdf[0])
        self._reward_flat = self._reward_table.reshape(-1)  # [(y * nd + d) * A + a]
        self._next_flat = self._next_stock.reshape(-1)  # [y * nd + d]
        self._phase_eye = np.eye(self.season_period, dtype=np.float32)

    def _check_actions(self, actions):
        return self._check_discrete(actions, self._n_actions)

    def _reset_copies(self, idx):
        self.stock[idx] = self.initial_stock
        self.pipeline[idx] = 0
        self.phase[idx] = 0

    def _step_copies(self, actions, active):
        if self.lead_time:
            pipe = self.pipeline
            arrive = pipe[:, 0]
            new = np.empty_like(pipe)
            new[:, :-1] = pipe[:, 1:]
            new[:, -1] = actions
            self.pipeline = new
        else:
            arrive = actions
        y = np.minimum(self.stock + arrive, self.max_stock)
        u = self._streams.peek1()
        self._streams.advance(active)
        if self.season_period == 1:
            d = np.searchsorted(self._cdf0, u, side="right")
        else:
            d = np.count_nonzero(self._cdf[self.phase] <= u[:, None], axis=1)
            self.phase = (self.phase + 1) % self.season_period
        k = y * self._nd + d
        self.stock = self._next_flat[k]
        reward = self._reward_flat[k * self._n_actions + actions]
        return reward, np.zeros(self.num_envs, dtype=np.bool_)

    def _observe(self):
        n, L = self.num_envs, self.lead_time
        out = np.empty((n, self._obs_space.shape[0]), dtype=np.float32)
        out[:, 0] = self.stock / self.max_stock
        if L:
            out[:, 1:1 + L] = self.pipeline / self.max_order
        if self.season_period > 1:
            out[:, 1 + L:] = self._phase_eye[self.phase]
        return out

    def state_indices(self) -> np.ndarray:
        """Flat state index of every copy into ``optimal_policy()``."""
        pipe = self._model.pipeline_index(self.pipeline) if self.lead_time else 0
        return (self.phase * (self.max_stock + 1) + self.stock) * self._model.n_pipe + pipe

    def _make_renderer(self):
        return InventoryEnv(render_mode=self.render_mode, **self._kwargs())

    def _load_renderer(self, i):
        r = self._renderer_env
        r.stock, r.phase = int(self.stock[i]), int(self.phase[i])
        r.pipeline = [int(p) for p in self.pipeline[i]]
        r._steps, r.last = int(self._steps[i]), None
